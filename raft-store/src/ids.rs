//! Member and cluster IDs: 64-bit FNV-1a hashes, never zero (etcd treats 0 as "no member").

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// The ID of the member at `peer_url`; `salt` is the cluster token at bootstrap, or a timestamp for
/// a member added later.
pub fn member_id(peer_url: &str, salt: &str) -> u64 {
    fnv1a(&[peer_url, salt])
}

/// The cluster ID of a bootstrapped cluster: a hash of its token and sorted initial peer URLs.
pub fn cluster_id(token: &str, peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    urls.insert(0, token);
    fnv1a(&urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_nonzero() {
        let a = member_id("http://10.0.0.1:2380", "tok");
        assert_eq!(a, member_id("http://10.0.0.1:2380", "tok"));
        assert_ne!(a, member_id("http://10.0.0.2:2380", "tok"));
        assert_ne!(a, member_id("http://10.0.0.1:2380", "other"));
        let urls = vec!["b".to_string(), "a".to_string()];
        assert_eq!(
            cluster_id("t", &urls),
            cluster_id("t", &["a".into(), "b".into()])
        );
        assert_ne!(cluster_id("t", &urls), 0);
    }
}
