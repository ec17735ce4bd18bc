//! What a `skiff-shim exec` tells the agent that ran it, over a socket pair the agent makes
//! (SOCK_SEQPACKET: one JSON [`Report`] per packet, shim to agent only): that the command
//! started (with, for a terminal, the terminal's master end attached as SCM_RIGHTS), or why it
//! could not, and last how it ended. Either side closing its end is the other's signal: the
//! shim ends the command when the agent's end closes, and the agent knows the shim is gone.
//! [`send`] is the shim's (blocking) side, [`ReportReceiver`] the agent's (tokio).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// Longest report, in bytes.
pub const MAX_REPORT: usize = 64 * 1024;
/// Longest failure message, in bytes: escaped as JSON it still fits in a report.
pub const MAX_MESSAGE: usize = 4 * 1024;

/// Why a command could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The command itself: not found, not executable (the user's to fix).
    Command,
    /// The container does not run.
    NotRunning,
    /// Anything else: the runtime failed.
    Runtime,
}

/// One message from the shim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The command runs as `pid` (in the agent's pid namespace); with a terminal, its master
    /// end comes with this report.
    Started { pid: i32 },
    /// The command did not start, or (after `Started`) the shim lost it.
    Failed { kind: FailureKind, message: String },
    /// The command ended: its exit code, or 128 + the signal that killed it.
    Exited { code: i32 },
}

impl Report {
    /// A failure report, its message cut to fit a packet.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Report {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Report::Failed { kind, message }
    }
}

/// A new pair of connected ends, both close-on-exec: (the agent's, the shim's).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sends one report, with `fd` attached if given. Blocking; never raises SIGPIPE.
pub fn send(socket: BorrowedFd<'_>, report: &Report, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One packet received: its report and the descriptor that came with it.
type Received = (Report, Option<OwnedFd>);

/// Receives one packet from `fd`: None at end of file (the peer closed its end).
fn recv_packet(fd: RawFd) -> io::Result<Option<Received>> {
    let mut buf = vec![0u8; MAX_REPORT];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (bytes, truncated, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: descriptors received through SCM_RIGHTS are new in this process and
                // owned by nothing else.
                fds.extend(
                    received
                        .into_iter()
                        .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                );
            }
        }
        (
            msg.bytes,
            msg.flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
            fds,
        )
    };
    if bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a report from the exec shim did not fit",
        ));
    }
    let report: Report = serde_json::from_slice(&buf[..bytes]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a report from the exec shim is not one: {e}"),
        )
    })?;
    Ok(Some((report, fds.into_iter().next())))
}

/// The agent's end: reports received without blocking a thread.
#[derive(Debug)]
pub struct ReportReceiver {
    fd: AsyncFd<OwnedFd>,
}

impl ReportReceiver {
    /// Takes the agent's end of [`pair`] (made non-blocking here). Within a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<ReportReceiver> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(ReportReceiver {
            // SAFETY: an OwnedFd is an open descriptor, always the same one, and it is owned
            // (so kept open) by the AsyncFd for the AsyncFd's whole life.
            fd: unsafe { AsyncFd::register(fd) }?,
        })
    }

    /// The next report; None once the shim's end is closed (it exited).
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_packet(fd.get_ref().as_raw_fd())) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// A report already waiting, if any (None also at end of file).
    pub fn try_recv(&self) -> io::Result<Option<Received>> {
        match recv_packet(self.fd.get_ref().as_raw_fd()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn reports_and_descriptors_cross() {
        let (agent, shim) = pair().expect("pair");
        let rx = ReportReceiver::new(agent).expect("receiver");
        assert!(rx.try_recv().expect("nothing yet").is_none());

        let (r, w) = nix::unistd::pipe().expect("pipe");
        send(shim.as_fd(), &Report::Started { pid: 42 }, Some(w.as_fd())).expect("send started");
        drop(w);
        let (report, fd) = rx.recv().await.expect("recv").expect("a report");
        assert_eq!(report, Report::Started { pid: 42 });
        // The descriptor is the pipe's write end: what goes in comes out of `r`.
        let w2 = fd.expect("a descriptor");
        nix::unistd::write(&w2, b"x").expect("write through the passed fd");
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut b).expect("read"), 1);

        send(shim.as_fd(), &Report::Exited { code: 3 }, None).expect("send exited");
        drop(shim);
        assert_eq!(
            rx.try_recv().expect("waiting").map(|(r, _)| r),
            Some(Report::Exited { code: 3 })
        );
        assert!(rx.recv().await.expect("end").is_none(), "end of file");
    }

    #[test]
    fn failure_messages_are_cut_to_fit() {
        let long = "é\u{1}".repeat(MAX_REPORT);
        let Report::Failed { message, kind } = Report::failed(FailureKind::Runtime, long) else {
            panic!("not a failure");
        };
        assert_eq!(kind, FailureKind::Runtime);
        assert!(message.len() <= MAX_MESSAGE);
        assert!(
            serde_json::to_vec(&Report::failed(FailureKind::Command, message))
                .expect("json")
                .len()
                < MAX_REPORT
        );
    }
}
