//! `skiff cluster status`: every control-plane replica as it sees itself (asked one by one at
//! the client URLs the members published): who leads Raft, the term, the applied index, and
//! whether it answered at all; then which replica runs the controllers.

use skiff_api::Client;

use super::{report, Ctx};
use crate::Reported;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The replicas, the Raft leader, term, applied index and health of each.
    Status,
}

pub async fn run(ctx: &Ctx, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Status => status(ctx).await,
    }
}

async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let view = match ctx.client.cluster_status().await {
        Ok(v) => v,
        Err(e) => {
            report(&e);
            return Err(Reported.into());
        }
    };
    let leader = view.leader_id;
    println!(
        "{:<12} {:<18} {:<26} {:<8} {:<6} {:<9} {:<18} HEALTH",
        "NAME", "ID", "ENDPOINT", "ROLE", "TERM", "APPLIED", "SEES LEADER"
    );
    let mut unhealthy = 0;
    for m in &view.members {
        let endpoint = m.client_urls.first().cloned().unwrap_or_default();
        let role = if m.is_learner {
            "learner"
        } else if m.id == leader {
            "leader"
        } else {
            "follower"
        };
        let own = if endpoint.is_empty() {
            None
        } else {
            match Client::new(std::slice::from_ref(&endpoint)) {
                Ok(c) => c
                    .with_deadline(std::time::Duration::ZERO)
                    .cluster_status()
                    .await
                    .ok(),
                Err(_) => None,
            }
        };
        let (term, applied, sees, health) = match &own {
            Some(s) => (
                s.raft_term.to_string(),
                s.applied_index.to_string(),
                if s.leader_id == 0 {
                    "none".to_string()
                } else {
                    format!("{:x}", s.leader_id)
                },
                "healthy",
            ),
            None => {
                unhealthy += 1;
                ("-".into(), "-".into(), "-".into(), "unreachable")
            }
        };
        println!(
            "{:<12} {:<18} {:<26} {:<8} {:<6} {:<9} {:<18} {health}",
            if m.name.is_empty() {
                "<unstarted>"
            } else {
                &m.name
            },
            format!("{:x}", m.id),
            endpoint,
            role,
            term,
            applied,
            sees,
        );
    }
    println!(
        "controllers: {}",
        if view.controller_leader.is_empty() {
            "<no leader yet>"
        } else {
            &view.controller_leader
        }
    );
    if unhealthy > 0 {
        eprintln!("{unhealthy} of {} replicas unreachable", view.members.len());
    }
    Ok(())
}
