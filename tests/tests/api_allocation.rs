//! Service ClusterIPs and NodePorts on a three-replica cluster: many Services created at once
//! through different replicas get distinct addresses and ports; a requested address or port is
//! honoured, or refused when taken or out of range (and nothing is stored); re-applying keeps
//! them; deleting a Service or its namespace releases them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use skiff_api::{Client, Kind, Reason};
use tests::cli::{ok_with_input, skiff};
use tests::cluster::Cluster;

fn service(name: &str, ty: &str, cluster_ip: Option<&str>, node_port: Option<u16>) -> Value {
    let mut port = json!({"port": 80, "targetPort": 8080});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
    }
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": ty, "selector": {"app": name}, "ports": [port]}
    });
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip);
    }
    svc
}

fn in_service_range(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let o = ip.octets();
    o[0] == 10 && (96..112).contains(&o[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_services_get_distinct_addresses_and_node_ports() {
    let cluster = Cluster::start(3).await;
    let clients: Vec<Client> = (0..3)
        .map(|i| Client::new(&[cluster.members[i].client_url()]).unwrap())
        .collect();
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for j in 0..12 {
                let svc = service(&format!("svc-{i}-{j}"), "NodePort", None, None);
                out.push(c.create(&svc, "default").await.unwrap().object);
            }
            out
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        for svc in t.await.unwrap() {
            let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
            assert!(in_service_range(&ip), "{ip}");
            assert_eq!(svc["spec"]["clusterIPs"], json!([ip.clone()]));
            assert!(ips.insert(ip), "address given twice");
            let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
            assert!((30000..=32767).contains(&np));
            assert!(ports.insert(np), "node port given twice");
        }
    }
    assert_eq!(ips.len(), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_values_are_honoured_refused_kept_and_released() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(&cluster.client_urls()).unwrap();
    let services = Kind::named("services").unwrap();

    let a = client
        .create(
            &service("a", "NodePort", Some("10.96.5.5"), Some(30080)),
            "default",
        )
        .await
        .unwrap()
        .object;
    assert_eq!(a["spec"]["clusterIP"], "10.96.5.5");
    assert_eq!(a["spec"]["ports"][0]["nodePort"], 30080);

    let refusals = [
        (
            service("b", "ClusterIP", Some("10.96.5.5"), None),
            "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.5.5\"}: failed to allocate IP 10.96.5.5: provided IP is already allocated",
        ),
        (
            service("b", "ClusterIP", Some("192.168.1.1"), None),
            "the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        ),
        (
            service("b", "NodePort", None, Some(30080)),
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
        ),
        (
            service("b", "NodePort", None, Some(20000)),
            "spec.ports[0].nodePort: Invalid value: 20000: provided port is not in the valid range. The range of valid ports is 30000-32767",
        ),
    ];
    for (svc, message) in &refusals {
        let err = client.create(svc, "default").await.unwrap_err();
        assert_eq!(err.reason, Reason::Invalid);
        assert!(err.message.contains(message), "{}", err.message);
    }
    let err = client.get(&services, "default", "b").await.unwrap_err();
    assert_eq!(
        err.reason,
        Reason::NotFound,
        "nothing stored for a refused Service"
    );

    // Re-applying a manifest that names neither keeps the address and the port.
    let eps = cluster.endpoints();
    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n    - port: 80\n";
    ok_with_input(&eps, &["apply", "-f", "-"], manifest);
    let first = client.get(&services, "default", "web").await.unwrap();
    let again = ok_with_input(&eps, &["apply", "-f", "-"], manifest);
    assert_eq!(again.trim(), "service/web unchanged");
    let changed = manifest.replace("port: 80", "port: 81");
    ok_with_input(&eps, &["apply", "-f", "-"], &changed);
    let second = client.get(&services, "default", "web").await.unwrap();
    assert_eq!(second["spec"]["clusterIP"], first["spec"]["clusterIP"]);
    // A changed ClusterIP is refused.
    let mut moved = second.clone();
    moved["spec"]["clusterIP"] = json!("10.96.9.9");
    let err = client.update(&moved, "default").await.unwrap_err();
    assert!(
        err.message.contains("may not change once set"),
        "{}",
        err.message
    );

    // Deleting releases: the same address and port can be requested again.
    client.delete(&services, "default", "a").await.unwrap();
    client
        .create(
            &service("c", "NodePort", Some("10.96.5.5"), Some(30080)),
            "default",
        )
        .await
        .unwrap();

    // So does deleting the namespace a Service was in.
    ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gone\n",
    );
    client
        .create(
            &service("d", "NodePort", Some("10.96.7.7"), Some(31000)),
            "gone",
        )
        .await
        .unwrap();
    let run = skiff(&eps, &["delete", "namespace", "gone"], None);
    assert!(run.ok, "{}", run.stderr);
    client
        .create(
            &service("e", "NodePort", Some("10.96.7.7"), Some(31000)),
            "default",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_of_many_services_releases_every_address() {
    // More Services than one store transaction could release (128 operations).
    let cluster = tests::cluster::Cluster::start_with(3, tests::cluster::STORE_ONLY).await;
    let client = std::sync::Arc::new(Client::new(&cluster.client_urls()).unwrap());
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    let ranges = || {
        etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only()
    };
    let before = etcd
        .get("/registry/ranges/", Some(ranges()))
        .await
        .unwrap()
        .count();
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "many"}}),
            "",
        )
        .await
        .unwrap();
    let mut creators = tokio::task::JoinSet::new();
    for w in 0..8 {
        let client = client.clone();
        creators.spawn(async move {
            for i in (w..150).step_by(8) {
                let svc = service(&format!("s{i}"), "ClusterIP", None, None);
                client.create(&svc, "many").await.unwrap();
            }
        });
    }
    while let Some(done) = creators.join_next().await {
        done.unwrap();
    }
    let held = etcd
        .get("/registry/ranges/", Some(ranges()))
        .await
        .unwrap()
        .count();
    assert_eq!(held, before + 150);
    let namespaces = Kind::named("namespaces").unwrap();
    client.delete(&namespaces, "", "many").await.unwrap();
    let services = Kind::named("services").unwrap();
    assert!(client
        .list(&services, Some("many"), "", "")
        .await
        .unwrap()
        .items
        .is_empty());
    let after = etcd
        .get("/registry/ranges/", Some(ranges()))
        .await
        .unwrap()
        .count();
    assert_eq!(after, before);
}
