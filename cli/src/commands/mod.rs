//! One module per command; they share the connection context and the error format.

pub mod apply;
pub mod cluster;
pub mod delete;
pub mod describe;
pub mod edit;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod modify;
pub mod node;
pub mod pod_target;
pub mod port_forward;
pub mod port_specs;
pub mod rollout;

use skiff_api::{ApiError, Kind, Reason};

/// What every command gets: the client and the namespace to use.
pub struct Ctx {
    pub client: skiff_api::Client,
    pub namespace: String,
    /// Whether `-n` was given (then a manifest naming another namespace is refused).
    pub namespace_flag: bool,
}

/// kubectl's `Error from server (Reason): message`, or `error: message` for failures that did
/// not come from the server.
pub fn report(e: &ApiError) {
    match e.reason {
        Reason::Unavailable => eprintln!("error: {}", e.message),
        r => eprintln!("Error from server ({}): {}", r.as_str(), e.message),
    }
}

/// The kind a user names, or kubectl's error for an unknown resource type.
pub fn kind_named(name: &str) -> anyhow::Result<Kind> {
    Kind::named(name)
        .ok_or_else(|| anyhow::anyhow!("the server doesn't have a resource type \"{name}\""))
}

/// Splits `kind/name` arguments and `kind name...` forms into (kind, names).
pub fn kind_and_names(args: &[String]) -> anyhow::Result<Vec<(Kind, Vec<String>)>> {
    let Some(first) = args.first() else {
        anyhow::bail!("you must specify the type of resource (for example: skiff get pods)");
    };
    if first.contains('/') {
        let mut out: Vec<(Kind, Vec<String>)> = Vec::new();
        for a in args {
            let Some((k, n)) = a.split_once('/') else {
                anyhow::bail!(
                    "there is no need to specify a resource type as a separate argument when \
                     passing arguments in resource/name form (e.g. 'skiff get resource/<name>' \
                     instead of 'skiff get resource resource/<name>')"
                );
            };
            out.push((kind_named(k)?, vec![n.to_string()]));
        }
        return Ok(out);
    }
    let mut kinds = Vec::new();
    for k in first.split(',') {
        kinds.push((kind_named(k)?, args[1..].to_vec()));
    }
    Ok(kinds)
}
