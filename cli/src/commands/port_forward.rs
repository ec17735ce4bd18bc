//! `skiff port-forward`: local ports forwarded to ports of a pod, as `kubectl port-forward`
//! forwards them. It listens on each local port (on each `--address`), and each connection
//! it accepts becomes one PortForward call through the API to the pod's node agent, which
//! connects to the port inside the pod; bytes and each side's end of writing are relayed
//! both ways. A connection that fails is reported (kubectl's `an error occurred forwarding`
//! line) and closed, and the others go on. It runs until interrupted (Ctrl-C, SIGTERM), or
//! until the pod is gone or stops running (kubectl's `lost connection to pod`).

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use serde_json::Value;
use skiff_api::agent_pb::PortForwardRequest;
use skiff_api::object;
use skiff_api::port_forward::PortForwardEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::port_specs::{self, Forward, ListenAddress};
use super::{kind_named, pod_target, report, Ctx};
use crate::Reported;

/// Bytes read from a local connection at a time.
const READ_SIZE: usize = 32 * 1024;
/// Connections waiting to be accepted on each local port.
const BACKLOG: u32 = 1024;
/// How long accepting waits after it failed (out of file descriptors), before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long following the pod waits after the control plane did not answer.
const RECHECK_PAUSE: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (`web`, `pod/web`), or a workload or Service whose pod to use
    /// (`deployment/web`, `svc/web`, …).
    target: String,
    /// `[LOCAL_PORT:]REMOTE_PORT` each: `8080`, `8080:80`, `:80` (a random local port),
    /// `8080:http` (a container port by name; through a Service, a service port, forwarded
    /// to its target port).
    ports: Vec<String>,
    /// Addresses to listen on, comma-separated: IP addresses, or `localhost` (127.0.0.1 and
    /// ::1 where there is one).
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    address: Vec<String>,
    /// How long to wait for a pod of the workload or Service to exist.
    #[arg(long, default_value = "1m", value_parser = super::pod_target::parse_timeout)]
    pod_running_timeout: std::time::Duration,
}

/// kubectl's line for a connection that failed, on stderr in klog's form.
fn forwarding_error(forward: Forward, message: &str) {
    let now = jiff::Zoned::now();
    eprintln!(
        "E{} {:>7} port_forward.rs] an error occurred forwarding {} -> {}: {message}",
        now.strftime("%m%d %H:%M:%S%.6f"),
        std::process::id(),
        forward.local,
        forward.remote
    );
}

/// How Go names a listener's network in its errors.
fn network(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "tcp4"
    } else {
        "tcp6"
    }
}

/// Listens on `addr`, as Go's listeners do (address reuse; an IPv6 one takes IPv6 only).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let s = TcpSocket::new_v6()?;
        v6_only(&s)?;
        s
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// IPV6_V6ONLY, so that `::` and `0.0.0.0` can both be listened on.
fn v6_only(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: nix::libc::c_int = 1;
    // SAFETY: the descriptor is the socket's own and the option value an int we own.
    let rc = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            nix::libc::IPPROTO_IPV6,
            nix::libc::IPV6_V6ONLY,
            (&on as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A system error lower-cased as Go prints it (`address already in use`).
fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Listens on `forward`'s local port on each address, saying so as kubectl does; a random
/// port is the one the first listener got, for every address. None (after kubectl's
/// message) when the port counts as failed.
fn listen_on(
    forward: &mut Forward,
    addresses: &[ListenAddress],
) -> Option<Vec<(TcpListener, Forward)>> {
    let mut listeners = Vec::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for a in addresses {
        let addr = SocketAddr::new(a.ip, forward.local);
        match listen(addr) {
            Ok(l) => {
                if let Ok(bound) = l.local_addr() {
                    forward.local = bound.port();
                }
                println!(
                    "Forwarding from {} -> {}",
                    SocketAddr::new(a.ip, forward.local),
                    forward.remote
                );
                listeners.push(l);
                results.push((a.localhost, true));
            }
            Err(e) => {
                errors.push(format!(
                    "unable to create listener: Error listen {} {addr}: bind: {}",
                    network(&addr),
                    describe(&e)
                ));
                results.push((a.localhost, false));
            }
        }
    }
    if port_specs::port_failed(&results) {
        eprintln!(
            "Unable to listen on port {}: Listeners failed to create with the following \
             errors: [{}]",
            forward.local,
            errors.join(" ")
        );
        return None;
    }
    Some(listeners.into_iter().map(|l| (l, *forward)).collect())
}

/// Accepts connections on `listener` for as long as the command runs, each one forwarded to
/// `pod` in `namespace`.
async fn accept_on(
    client: skiff_api::Client,
    namespace: String,
    pod: String,
    listener: TcpListener,
    forward: Forward,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    println!("Handling connection for {}", forward.local);
                    let request = PortForwardRequest {
                        namespace: namespace.clone(),
                        pod: pod.clone(),
                        port: forward.remote.into(),
                        ..Default::default()
                    };
                    connections.spawn(handle(client.clone(), conn, request, forward));
                }
                Err(e) => {
                    eprintln!("error: accepting a connection on port {}: {e}", forward.local);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// One local connection, relayed to the pod's port until both sides are done, either side
/// fails, or the local side goes away.
async fn handle(
    client: skiff_api::Client,
    conn: TcpStream,
    request: PortForwardRequest,
    forward: Forward,
) {
    let _ = conn.set_nodelay(true);
    let mut session = match client.port_forward(request).await {
        Ok(s) => s,
        Err(e) => return forwarding_error(forward, &e.message),
    };
    let input = session.input.clone();
    let (mut local_read, mut local_write) = conn.into_split();
    // Local bytes to the pod; the local end of writing passed on. Err: the local side failed.
    let up = async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            match local_read.read(&mut buf).await {
                Ok(0) => {
                    input.close_write().await;
                    return Ok(());
                }
                // A closed call: what went wrong comes from its output.
                Ok(n) => {
                    if !input.data(buf[..n].to_vec()).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };
    // The pod's bytes to the local side, until the call ends.
    let down = async {
        loop {
            match session.next().await {
                Ok(Some(PortForwardEvent::Data(b))) => {
                    if local_write.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Ok(Some(PortForwardEvent::Closed)) => {
                    let _ = local_write.shutdown().await;
                }
                Ok(None) => return,
                Err(e) => return forwarding_error(forward, &e.message),
            }
        }
    };
    let mut up = pin!(up);
    let mut down = pin!(down);
    let mut up_done = false;
    loop {
        tokio::select! {
            sent = &mut up, if !up_done => {
                up_done = true;
                if sent.is_err() {
                    return;
                }
            }
            () = &mut down => return,
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    if args.ports.is_empty() {
        anyhow::bail!("TYPE/NAME and list of ports are required for port-forward");
    }
    let specs = args
        .ports
        .iter()
        .map(|p| port_specs::parse_port(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let addresses = port_specs::parse_addresses(&args.address).map_err(anyhow::Error::msg)?;
    let picked = pod_target::pick(
        ctx,
        &args.target,
        "port-forward to",
        args.pod_running_timeout,
    )
    .await?;
    let name = picked.pod;
    let pod = ctx
        .client
        .get(&kind_named("pods")?, &ctx.namespace, &name)
        .await
        .map_err(|e| {
            report(&e);
            anyhow::Error::from(Reported)
        })?;
    let phase = object::field_string(&pod, "status.phase");
    if phase != "Running" {
        anyhow::bail!("unable to forward port because pod is not running. Current status={phase}");
    }
    let mut forwards = specs
        .iter()
        .map(|s| match &picked.service {
            Some(service) => port_specs::resolve_through_service(s, service, &pod),
            None => port_specs::resolve(s, &pod),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut listeners = Vec::new();
    for forward in &mut forwards {
        if let Some(ls) = listen_on(forward, &addresses) {
            listeners.extend(ls);
        }
    }
    if listeners.is_empty() {
        anyhow::bail!(
            "unable to listen on any of the requested ports: {}",
            port_specs::port_list(&forwards)
        );
    }
    let mut serving = tokio::task::JoinSet::new();
    for (listener, forward) in listeners {
        serving.spawn(accept_on(
            ctx.client.clone(),
            ctx.namespace.clone(),
            name.clone(),
            listener,
            forward,
        ));
    }
    let uid = object::meta_str(&pod, "uid").to_string();
    let lost = tokio::select! {
        () = interrupted() => false,
        () = pod_lost(ctx, &name, &uid) => true,
    };
    serving.abort_all();
    if lost {
        anyhow::bail!("lost connection to pod");
    }
    Ok(())
}

/// Whether `pod` (from a Get or a watch event) is still the running pod `uid`.
fn still_running(pod: &Value, uid: &str) -> bool {
    object::meta_str(pod, "uid") == uid && object::field_string(pod, "status.phase") == "Running"
}

/// Returns once pod `name` (uid `uid`) is gone or no longer running, as kubectl's forwarding
/// ends when the pod does. A control plane that does not answer is waited for.
async fn pod_lost(ctx: &Ctx, name: &str, uid: &str) {
    let Ok(pods) = kind_named("pods") else {
        return std::future::pending().await;
    };
    loop {
        let pod = match ctx.client.get(&pods, &ctx.namespace, name).await {
            Ok(p) => p,
            Err(e) if e.reason == skiff_api::Reason::NotFound => return,
            Err(_) => {
                tokio::time::sleep(RECHECK_PAUSE).await;
                continue;
            }
        };
        if !still_running(&pod, uid) {
            return;
        }
        let mut watch = ctx.client.watch(
            &pods,
            Some(&ctx.namespace),
            "",
            &format!("metadata.name={name}"),
            object::resource_version(&pod),
        );
        // Until the watch ends (a compacted revision) or fails: then read the pod again.
        while let Ok(Some(event)) = watch.next().await {
            match event.kind.as_str() {
                "DELETED" => return,
                "ADDED" | "MODIFIED" if !still_running(&event.object, uid) => return,
                "ERROR" => break,
                _ => {}
            }
        }
        tokio::time::sleep(RECHECK_PAUSE).await;
    }
}
