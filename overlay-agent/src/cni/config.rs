//! The network configuration a runtime passes on stdin.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    error::{CniError, code},
    result::AddResult,
    version::Version,
};

/// The `type` our plugin is configured under.
pub const PLUGIN_TYPE: &str = "overlay-cni";

/// One attachment the runtime still uses (GC's
/// `cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
}

/// The parts of a network configuration we use.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// Requested specification version; results are written in it.
    pub cni_version: Version,
    /// Network name.
    pub name: String,
    /// Agent socket (`agentSocket`), default `/run/overlay/agent.sock`.
    pub agent_socket: Option<PathBuf>,
    /// Result of the previous plugin (DEL, CHECK).
    pub prev_result: Option<AddResult>,
    /// GC: attachments to keep.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `dns` to report in the result, copied from the configuration.
    pub dns: Option<Value>,
}

/// The `cniVersion` of a configuration, read even when the rest is bad, so
/// an error can be written in the version the runtime understands.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    Some(v.get("cniVersion")?.as_str()?.to_owned())
}

/// Parses and validates a network configuration. Errors carry the
/// specification's codes: 6 for malformed JSON, 1 for an unsupported
/// version, 7 for a missing or wrong field, 2 for a field we do not support.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the network configuration on stdin is not valid JSON: {e}"),
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        CniError::new(
            code::DECODING_FAILURE,
            "the network configuration on stdin is not a JSON object",
        )
    })?;
    let str_field = |key: &str| -> Result<Option<&str>, CniError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(CniError::config(format!(
                "network configuration field {key:?} must be a string, not {other}"
            ))),
        }
    };
    let cni_version: Version = str_field("cniVersion")?
        .ok_or_else(|| CniError::config("network configuration has no \"cniVersion\""))?
        .parse()?;
    let name = str_field("name")?
        .ok_or_else(|| CniError::config("network configuration has no \"name\""))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(CniError::config(format!(
            "network name {name:?} is not valid (letters, digits, '_', '.', '-')"
        )));
    }
    match str_field("type")? {
        Some(PLUGIN_TYPE) => {}
        Some(other) => {
            return Err(CniError::config(format!(
                "network configuration \"type\" is {other:?}; this plugin is {PLUGIN_TYPE:?}"
            )));
        }
        None => return Err(CniError::config("network configuration has no \"type\"")),
    }
    if let Some(ipam) = obj.get("ipam")
        && !matches!(ipam, Value::Null)
        && ipam.as_object().is_none_or(|o| !o.is_empty())
    {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!(
                "unsupported field \"ipam\" = {ipam}: overlay-cni allocates pod addresses from \
                 the node's blocks itself; remove the \"ipam\" section"
            ),
        ));
    }
    let agent_socket = match str_field("agentSocket")? {
        None => None,
        Some(s) if s.starts_with('/') => Some(PathBuf::from(s)),
        Some(s) => {
            return Err(CniError::config(format!(
                "\"agentSocket\" {s:?} must be an absolute path"
            )));
        }
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(p) => Some(AddResult::parse(p).map_err(|e| {
            CniError::config(format!("\"prevResult\" is not a CNI result: {}", e.msg))
        })?),
    };
    let valid_attachments = match obj.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(list) => Some(
            serde_json::from_value::<Vec<Attachment>>(list.clone()).map_err(|e| {
                CniError::config(format!(
                    "\"cni.dev/valid-attachments\" is not a list of {{\"containerID\", \
                     \"ifname\"}}: {e}"
                ))
            })?,
        ),
    };
    let dns = obj.get("dns").filter(|d| !d.is_null()).cloned();
    Ok(NetConf {
        cni_version,
        name: name.to_owned(),
        agent_socket,
        prev_result,
        valid_attachments,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"overlay","type":"overlay-cni"{extra}}}"#)
    }

    #[test]
    fn a_minimal_configuration_parses() {
        let c = parse(conf("").as_bytes()).unwrap();
        assert_eq!(c.cni_version, Version::V1_0_0);
        assert_eq!(c.name, "overlay");
        assert_eq!(c.agent_socket, None);
        assert_eq!(c.prev_result, None);
        let c = parse(conf(r#","agentSocket":"/run/x.sock","ipam":{}"#).as_bytes()).unwrap();
        assert_eq!(c.agent_socket, Some(PathBuf::from("/run/x.sock")));
    }

    #[test]
    fn bad_configurations_get_the_right_code_and_name_the_field() {
        let cases: &[(&str, u32, &str)] = &[
            ("{", 6, "not valid JSON"),
            ("[]", 6, "not a JSON object"),
            (r#"{"name":"o","type":"overlay-cni"}"#, 7, "cniVersion"),
            (
                r#"{"cniVersion":"9.9.9","name":"o","type":"overlay-cni"}"#,
                1,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":1,"name":"o","type":"overlay-cni"}"#,
                7,
                "cniVersion",
            ),
            (r#"{"cniVersion":"1.0.0","type":"overlay-cni"}"#, 7, "name"),
            (
                r#"{"cniVersion":"1.0.0","name":"a b","type":"overlay-cni"}"#,
                7,
                "a b",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"o","type":"bridge"}"#,
                7,
                "bridge",
            ),
            (r#"{"cniVersion":"1.0.0","name":"o"}"#, 7, "type"),
        ];
        for (input, code, needle) in cases {
            let e = parse(input.as_bytes()).unwrap_err();
            assert_eq!(e.code, *code, "{input}: {}", e.msg);
            assert!(e.msg.contains(needle), "{input}: {}", e.msg);
        }
        let e = parse(conf(r#","ipam":{"type":"host-local"}"#).as_bytes()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.msg.contains("ipam"), "{}", e.msg);
        let e = parse(conf(r#","agentSocket":"rel.sock""#).as_bytes()).unwrap_err();
        assert!(e.msg.contains("agentSocket"), "{}", e.msg);
        let e = parse(conf(r#","prevResult":{"ips":"x"}"#).as_bytes()).unwrap_err();
        assert!(e.msg.contains("prevResult"), "{}", e.msg);
        let e = parse(conf(r#","cni.dev/valid-attachments":[{"x":1}]"#).as_bytes()).unwrap_err();
        assert!(e.msg.contains("valid-attachments"), "{}", e.msg);
    }

    #[test]
    fn gc_attachments_are_read() {
        let c = parse(
            conf(r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn the_version_is_sniffed_from_otherwise_bad_input() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.4.0","type":3}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(sniff_version(b"{"), None);
    }
}
