//! Terminals of `exec --tty`: a terminal's window size (the TIOCSWINSZ and TIOCGWINSZ ioctls,
//! which work on either end of a pseudo-terminal) and [`PtyMaster`], the agent's end of one,
//! read and written through tokio's reactor. Reading a master whose other end (the slave) is
//! closed everywhere fails with EIO: that is its end of file.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl WindowSize {
    /// The size a request gives as width and height; `None` when either is zero (not given).
    /// Larger values than a terminal holds are cut to its maximum.
    pub fn from_width_height(width: u32, height: u32) -> Option<WindowSize> {
        if width == 0 || height == 0 {
            return None;
        }
        let cut = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        Some(WindowSize {
            rows: cut(height),
            cols: cut(width),
        })
    }
}

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, nix::libc::winsize);
nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Sets the window size of the terminal `fd` is an end of; its foreground process group gets
/// SIGWINCH when the size changes.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> nix::Result<()> {
    let ws = nix::libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is open for the duration of the call and `ws` outlives it; TIOCSWINSZ only
    // reads the struct.
    unsafe { tiocswinsz(fd.as_raw_fd(), &ws) }.map(drop)
}

/// The window size of the terminal `fd` is an end of.
pub fn window_size(fd: BorrowedFd<'_>) -> nix::Result<WindowSize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is open for the duration of the call and `ws` is a valid winsize the ioctl
    // writes into.
    unsafe { tiocgwinsz(fd.as_raw_fd(), &mut ws) }?;
    Ok(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// The master end of a pseudo-terminal, non-blocking, driven by tokio's reactor.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Takes the master `fd` (made non-blocking here). Must be called within a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<PtyMaster> {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(PtyMaster {
            // SAFETY: an OwnedFd is an open descriptor, always the same one, and it is owned
            // (so kept open) by the AsyncFd for the AsyncFd's whole life.
            fd: unsafe { AsyncFd::register(fd) }?,
        })
    }

    /// Reads what the terminal's programs wrote; 0 once the slave is closed everywhere.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), buf).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as typed input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's window size.
    pub fn set_size(&self, size: WindowSize) -> io::Result<()> {
        set_window_size(self.fd.get_ref().as_fd(), size).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_requests() {
        assert_eq!(WindowSize::from_width_height(0, 24), None);
        assert_eq!(WindowSize::from_width_height(80, 0), None);
        assert_eq!(
            WindowSize::from_width_height(80, 24),
            Some(WindowSize { rows: 24, cols: 80 })
        );
        assert_eq!(
            WindowSize::from_width_height(100_000, 3),
            Some(WindowSize {
                rows: 3,
                cols: u16::MAX
            })
        );
    }

    #[tokio::test]
    async fn the_master_carries_both_ways_and_sets_the_size() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let master = PtyMaster::new(pty.master).expect("master");
        let size = WindowSize {
            rows: 33,
            cols: 101,
        };
        master.set_size(size).expect("set size");
        assert_eq!(window_size(pty.slave.as_fd()).expect("get size"), size);

        nix::unistd::write(&pty.slave, b"out").expect("write slave");
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).await.expect("read master");
        assert_eq!(&buf[..n], b"out");

        // Raw mode, so that what the master writes reaches the slave unchanged, without echo.
        let mut t = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
            .expect("tcsetattr");
        master.write_all(b"in").await.expect("write master");
        let n = nix::unistd::read(pty.slave.as_raw_fd(), &mut buf).expect("read slave");
        assert_eq!(&buf[..n], b"in");

        drop(pty.slave);
        assert_eq!(master.read(&mut buf).await.expect("end"), 0);
    }
}
