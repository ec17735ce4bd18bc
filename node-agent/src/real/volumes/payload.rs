//! The files a configMap, secret, downward API or projected volume holds (its payload), from
//! the objects' data as the kubelet projects them: every key, or only the `items` named (a key
//! to a relative path, with its own mode), `defaultMode` otherwise (0644); a key named by an
//! item but missing is an error unless the source is optional. Downward API files carry the
//! pod's name, namespace, uid, labels and annotations (maps as `key="value"` lines, sorted,
//! quoted as Go's %q does) and containers' requests and limits in units of their divisor,
//! rounded up (an unset CPU or memory limit reads as the node's capacity). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};
use skiff_api::quantity::Quantity;

use super::error::VolumeError;
use super::layout::DEFAULT_FILE_MODE;

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    /// Permission bits (0o777 at most).
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Payload = BTreeMap<String, File>;

/// What the node has, for resource fields of containers without limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeCapacity {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// A mode from the API (an int32, usually written in octal in YAML), or `default`.
pub fn mode(m: Option<i32>, default: u32) -> u32 {
    m.map(|m| (m as u32) & 0o777).unwrap_or(default)
}

/// A configMap's keys: `data` and `binaryData`.
pub fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// A secret's keys: `data` (already decoded from base64) and `stringData`.
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// The payload of keyed data: all keys under their own names, or the `items` chosen.
pub fn keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing_key: fn(String) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    File {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        out.insert(
                            item.path.clone(),
                            File {
                                data: v.clone(),
                                mode: mode(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => return Err(missing_key(item.key.clone())),
                }
            }
        }
    }
    Ok(out)
}

/// A string quoted as Go's `%q` quotes it.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Labels or annotations as the downward API writes them: `key="value"` lines, sorted by key,
/// without a final newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef` in a volume.
pub fn field(pod: &Pod, path: &str) -> Result<String, VolumeError> {
    let m = &pod.metadata;
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(VolumeError::FieldPath(path.into()));
            }
        }
    })
}

/// The value of a downward API `resourceFieldRef` (limits.cpu, requests.memory…).
pub fn resource(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&str>,
    node: NodeCapacity,
) -> Result<String, VolumeError> {
    let spec = pod.spec.as_ref();
    let c = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container)
        .ok_or_else(|| VolumeError::NoContainer(container.into()))?;
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| VolumeError::Resource(resource.into()))?;
    let get = |which: &str| {
        let r = c.resources.as_ref()?;
        let m = if which == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }?;
        Quantity::parse(&m.get(name)?.0).ok()
    };
    let cpu = match name {
        "cpu" => true,
        "memory" | "ephemeral-storage" => false,
        _ => return Err(VolumeError::Resource(resource.into())),
    };
    let value = match which {
        // An unset limit is the node's capacity; ephemeral storage has none measured here.
        "limits" => get("limits").map(|q| if cpu { q.milli_value() } else { q.value() }),
        // An unset request is the limit, as the API server defaults it.
        "requests" => get("requests")
            .or_else(|| get("limits"))
            .map(|q| if cpu { q.milli_value() } else { q.value() })
            .or(Some(0)),
        _ => return Err(VolumeError::Resource(resource.into())),
    };
    let value = value.unwrap_or(match name {
        "cpu" => node.cpu_millis,
        "memory" => node.memory_bytes,
        _ => 0,
    });
    let divisor_text = divisor.unwrap_or("1");
    let d = Quantity::parse(divisor_text).map_err(|_| VolumeError::Divisor(divisor_text.into()))?;
    let d = if cpu { d.milli_value() } else { d.value() };
    if d <= 0 {
        return Err(VolumeError::Divisor(divisor_text.into()));
    }
    Ok(value
        .div_euclid(d)
        .saturating_add(i64::from(value.rem_euclid(d) != 0))
        .to_string())
}

/// The payload of downward API items.
pub fn downward_api(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    node: NodeCapacity,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for item in items {
        let text = if let Some(f) = &item.field_ref {
            field(pod, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            resource(
                pod,
                r.container_name.as_deref().unwrap_or_default(),
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                node,
            )?
        } else {
            String::new()
        };
        out.insert(
            item.path.clone(),
            File {
                data: text.into_bytes(),
                mode: mode(item.mode, default_mode),
            },
        );
    }
    Ok(out)
}

/// The mode a volume's files get when neither it nor the item names one.
pub fn default_mode(m: Option<i32>) -> u32 {
    mode(m, DEFAULT_FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::ByteString;

    fn data(kv: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    fn files(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    String::from_utf8_lossy(&f.data).into_owned(),
                    f.mode,
                )
            })
            .collect()
    }

    #[test]
    fn keys_items_and_modes_are_chosen_as_the_kubelet_does() {
        let d = data(&[("a", "1"), ("b", "2")]);
        let missing = VolumeError::ConfigMapKey;
        // No items: every key, the default mode.
        let all = keys(&d, None, 0o644, false, missing).expect("all");
        assert_eq!(
            files(&all),
            [
                ("a".into(), "1".into(), 0o644),
                ("b".into(), "2".into(), 0o644)
            ]
        );
        // Items: only those, under their paths, their own mode over the default.
        let some = keys(
            &d,
            Some(&[item("b", "dir/bee", Some(0o600)), item("a", "ay", None)]),
            0o440,
            false,
            missing,
        )
        .expect("items");
        assert_eq!(
            files(&some),
            [
                ("ay".into(), "1".into(), 0o440),
                ("dir/bee".into(), "2".into(), 0o600)
            ]
        );
        // A missing key: an error, unless optional.
        let err = keys(&d, Some(&[item("c", "c", None)]), 0o644, false, missing)
            .expect_err("missing key");
        assert_eq!(
            err.to_string(),
            "configmap references non-existent config key: c"
        );
        let err = keys(
            &d,
            Some(&[item("c", "c", None)]),
            0o644,
            false,
            VolumeError::SecretKey,
        )
        .expect_err("missing key");
        assert_eq!(err.to_string(), "references non-existent secret key: c");
        let none = keys(&d, Some(&[item("c", "c", None)]), 0o644, true, missing).expect("optional");
        assert!(none.is_empty());
        // Modes in the API are plain integers: 420 is 0644.
        assert_eq!(default_mode(None), 0o644);
        assert_eq!(default_mode(Some(420)), 0o644);
        assert_eq!(default_mode(Some(0o400)), 0o400);
    }

    #[test]
    fn objects_give_their_data() {
        let cm = ConfigMap {
            data: Some([("text".to_string(), "hi".to_string())].into()),
            binary_data: Some([("bin".to_string(), ByteString(vec![0, 1, 2]))].into()),
            ..Default::default()
        };
        let d = config_map_data(&cm);
        assert_eq!(d.get("text").map(Vec::as_slice), Some(&b"hi"[..]));
        assert_eq!(d.get("bin").map(Vec::as_slice), Some(&[0u8, 1, 2][..]));
        let s = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            string_data: Some([("user".to_string(), "admin".to_string())].into()),
            ..Default::default()
        };
        let d = secret_data(&s);
        assert_eq!(d.get("password").map(Vec::as_slice), Some(&b"s3cret"[..]));
        assert_eq!(d.get("user").map(Vec::as_slice), Some(&b"admin"[..]));
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("u-1".into());
        p.metadata.labels = Some(
            [
                ("tier".to_string(), "front".to_string()),
                ("app".to_string(), "say \"hi\"\n".to_string()),
            ]
            .into(),
        );
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(
                        [
                            ("cpu".to_string(), Q("1500m".into())),
                            ("memory".to_string(), Q("64Mi".into())),
                        ]
                        .into(),
                    ),
                    requests: Some([("cpu".to_string(), Q("250m".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn fields_read_as_the_downward_api_writes_them() {
        let p = pod();
        for (path, want) in [
            ("metadata.name", "web-0"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "u-1"),
            (
                "metadata.labels",
                "app=\"say \\\"hi\\\"\\n\"\ntier=\"front\"",
            ),
            ("metadata.labels['tier']", "front"),
            ("metadata.labels['nope']", ""),
            ("metadata.annotations", ""),
        ] {
            assert_eq!(field(&p, path).expect(path), want, "{path}");
        }
        assert_eq!(
            field(&p, "spec.nodeName")
                .expect_err("not in volumes")
                .to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
        assert_eq!(go_quote("a\tb\u{1}"), "\"a\\tb\\x01\"");
    }

    #[test]
    fn resources_are_rounded_up_in_divisor_units() {
        let p = pod();
        let node = NodeCapacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        };
        for (res, divisor, want) in [
            ("limits.cpu", None, "2"),
            ("limits.cpu", Some("1m"), "1500"),
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("100m"), "3"),
            ("limits.memory", None, "67108864"),
            ("limits.memory", Some("1Mi"), "64"),
            // No memory request: the limit, as the API server defaults it.
            ("requests.memory", Some("1Mi"), "64"),
            ("limits.ephemeral-storage", None, "0"),
        ] {
            assert_eq!(
                resource(&p, "main", res, divisor, node).expect(res),
                want,
                "{res} {divisor:?}"
            );
        }
        let mut unlimited = pod();
        if let Some(s) = unlimited.spec.as_mut() {
            s.containers[0].resources = None;
        }
        assert_eq!(
            resource(&unlimited, "main", "limits.memory", Some("1Gi"), node).expect("node"),
            "8"
        );
        assert_eq!(
            resource(&unlimited, "main", "limits.cpu", None, node).expect("node"),
            "4"
        );
        assert_eq!(
            resource(&unlimited, "main", "requests.cpu", None, node).expect("zero"),
            "0"
        );
        assert!(resource(&p, "other", "limits.cpu", None, node).is_err());
        assert!(resource(&p, "main", "limits.gpu", None, node).is_err());
        assert!(resource(&p, "main", "limits.cpu", Some("0"), node).is_err());

        let items = [
            DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.labels".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "mem".into(),
                mode: Some(0o600),
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some("main".into()),
                    resource: "limits.memory".into(),
                    divisor: Some(Q("1Mi".into())),
                }),
                ..Default::default()
            },
        ];
        let payload = downward_api(&p, &items, 0o644, node).expect("payload");
        assert_eq!(
            files(&payload)[1],
            ("mem".to_string(), "64".to_string(), 0o600)
        );
        assert_eq!(payload["labels"].mode, 0o644);
    }
}
