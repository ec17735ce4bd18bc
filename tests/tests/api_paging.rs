//! Lists in pages: a client list of more objects than fit in one answer gets them all, in
//! order, at one revision (pages are cut by count and by size, so large objects do not break
//! the message limit); a page asked for by limit carries a continue token that reads the next
//! page at the first page's revision, even after later writes; a token older than a compaction
//! is refused as Expired, and a forged one as a bad request.

use serde_json::json;
use skiff_api::pb::api_client::ApiClient;
use skiff_api::pb::ListRequest;
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;

fn request(limit: i64, token: &str) -> ListRequest {
    ListRequest {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "paged".into(),
        label_selector: String::new(),
        field_selector: String::new(),
        limit,
        continue_token: token.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_large_lists_come_in_consistent_pages() {
    let cluster = Cluster::start(3).await;
    let client = std::sync::Arc::new(Client::new(&cluster.client_urls()).unwrap());
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "paged"}}),
            "",
        )
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let client = client.clone();
        writers.spawn(async move {
            for i in (w..1200).step_by(16) {
                // Every 200th object is large: three of them exceed the page's size budget.
                let size = if i % 200 == 0 { 700_000 } else { 100 };
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:04}")}, "data": {"v": "x".repeat(size)}});
                client.create(&cm, "paged").await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let cms = Kind::named("configmaps").unwrap();
    let all = client.list(&cms, Some("paged"), "", "").await.unwrap();
    assert_eq!(all.items.len(), 1200);
    let names: Vec<String> = all
        .items
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // A page by limit, then the next one after a write: the write is not in it.
    let mut raw = ApiClient::connect(cluster.members[0].client_url())
        .await
        .unwrap()
        .max_decoding_message_size(4 << 20);
    let first = raw.list(request(100, "")).await.unwrap().into_inner();
    assert_eq!(first.items.len(), 100);
    assert!(!first.continue_token.is_empty());
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-0150a"}}),
            "paged",
        )
        .await
        .unwrap();
    let second = raw
        .list(request(100, &first.continue_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.resource_version, first.resource_version);
    let second_names: Vec<String> = second
        .items
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(second_names.first().map(String::as_str), Some("cm-0100"));
    assert!(!second_names.contains(&"cm-0150a".to_string()));

    // Compacted past the token's revision: Expired. A forged token: bad request.
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    let now = etcd
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    // Under a loaded machine the request may time out while the compaction still lands:
    // ask again until it is done (or reported done already).
    tests::cluster::compact(&etcd, now).await;
    let err = raw
        .list(request(100, &first.continue_token))
        .await
        .unwrap_err();
    assert_eq!(
        skiff_api::ApiError::from_status(&err).reason,
        Reason::Expired,
        "{err:?}"
    );
    let err = raw.list(request(100, "nonsense")).await.unwrap_err();
    assert_eq!(
        skiff_api::ApiError::from_status(&err).reason,
        Reason::BadRequest
    );
}
