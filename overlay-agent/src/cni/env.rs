//! The `CNI_*` environment variables of one plugin invocation.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CniError;

/// The operation a runtime asks for (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Create the pod's interface.
    Add,
    /// Remove it (idempotent).
    Del,
    /// Verify it.
    Check,
    /// Report supported versions.
    Version,
    /// Is the plugin ready to serve ADD?
    Status,
    /// Remove everything not in the runtime's list of valid attachments.
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            _ => return None,
        })
    }
}

/// Kubernetes identity of the pod, from `CNI_ARGS` (`K8S_POD_NAMESPACE`,
/// `K8S_POD_NAME`), used in logs and stored with the allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A validated plugin invocation: command plus the variables it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (required by ADD, DEL, CHECK).
    pub container_id: Option<String>,
    /// `CNI_NETNS` (required by ADD and CHECK; may be empty on DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (required by ADD, DEL, CHECK).
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

impl Invocation {
    /// Reads the invocation from environment variables (`vars` is usually
    /// `std::env::vars()`). Errors name the variable at fault (code 4).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, CniError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let env: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("CNI_"))
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();

        let command = match env.get("CNI_COMMAND") {
            None => return Err(CniError::env("CNI_COMMAND is not set")),
            Some(c) => Command::parse(c).ok_or_else(|| {
                CniError::env(format!(
                    "CNI_COMMAND={c:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                ))
            })?,
        };
        if command == Command::Version {
            return Ok(Self {
                command,
                container_id: None,
                netns: None,
                ifname: None,
                args: BTreeMap::new(),
                path: None,
            });
        }
        let per_pod = matches!(command, Command::Add | Command::Del | Command::Check);

        let container_id = get("CNI_CONTAINERID");
        let ifname = get("CNI_IFNAME");
        let netns = get("CNI_NETNS").map(PathBuf::from);
        let path = get("CNI_PATH");
        if per_pod {
            let mut missing = Vec::new();
            if container_id.is_none() {
                missing.push("CNI_CONTAINERID");
            }
            if ifname.is_none() {
                missing.push("CNI_IFNAME");
            }
            if netns.is_none() && command != Command::Del {
                missing.push("CNI_NETNS");
            }
            if path.is_none() {
                missing.push("CNI_PATH");
            }
            if !missing.is_empty() {
                return Err(CniError::env(format!(
                    "{} must be set for {command:?}",
                    missing.join(", ")
                )));
            }
        }
        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        if let Some(name) = &ifname {
            validate_ifname(name)?;
        }
        if let Some(ns) = &netns
            && !ns.is_absolute()
        {
            return Err(CniError::env(format!(
                "CNI_NETNS={:?} is not an absolute path",
                ns.display()
            )));
        }
        let args = parse_args(env.get("CNI_ARGS").map(String::as_str).unwrap_or(""))?;
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The pod's Kubernetes identity, when `CNI_ARGS` carries it.
    pub fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.args.get("K8S_POD_NAMESPACE")?.clone(),
            name: self.args.get("K8S_POD_NAME")?.clone(),
        })
    }
}

/// The container ID rule of the specification: letters, digits, `_`, `.`
/// and `-`, starting with a letter or digit.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.len() <= 1024
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID={id:?} is not a valid container ID (letters, digits, '_', '.', '-', \
             starting with a letter or digit)"
        )))
    }
}

/// The interface name rule of the specification (and Linux): 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_IFNAME={name:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or \
             whitespace)"
        )))
    }
}

fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::env(format!(
                "CNI_ARGS entry {pair:?} is not KEY=VALUE (entries are separated by ';')"
            ))
        })?;
        if k.is_empty() {
            return Err(CniError::env(format!("CNI_ARGS entry {pair:?} has no key")));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(vars: &[(&str, &str)]) -> Result<Invocation, CniError> {
        Invocation::from_vars(vars.iter().copied())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1.x_y"),
        ("CNI_NETNS", "/proc/1/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IgnoreUnknown=1",
        ),
        ("PATH", "/usr/bin"),
    ];

    #[test]
    fn a_complete_add_parses_with_the_pod_identity() {
        let i = inv(ADD).unwrap();
        assert_eq!(i.command, Command::Add);
        assert_eq!(i.container_id.as_deref(), Some("abc-1.x_y"));
        assert_eq!(i.ifname.as_deref(), Some("eth0"));
        assert_eq!(i.pod().unwrap().to_string(), "default/web-0");
        assert_eq!(i.args["IgnoreUnknown"], "1");
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let vars: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != var).collect();
            let e = inv(&vars).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains(var), "{var}: {}", e.msg);
        }
        let e = inv(&[]).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND is not set"), "{}", e.msg);
    }

    #[test]
    fn del_accepts_an_empty_netns() {
        let vars: Vec<_> = ADD
            .iter()
            .copied()
            .map(|(k, v)| match k {
                "CNI_COMMAND" => (k, "DEL"),
                "CNI_NETNS" => (k, ""),
                _ => (k, v),
            })
            .collect();
        let i = inv(&vars).unwrap();
        assert_eq!(i.command, Command::Del);
        assert_eq!(i.netns, None);
    }

    #[test]
    fn malformed_values_are_rejected_with_the_variable_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("CNI_COMMAND", "ADDD", "CNI_COMMAND=\"ADDD\""),
            ("CNI_CONTAINERID", "-bad", "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", "a/b", "CNI_CONTAINERID"),
            ("CNI_IFNAME", "a-very-long-interface", "CNI_IFNAME"),
            ("CNI_IFNAME", "et h0", "CNI_IFNAME"),
            ("CNI_IFNAME", "..", "CNI_IFNAME"),
            ("CNI_NETNS", "relative/ns", "CNI_NETNS"),
            ("CNI_ARGS", "K8S_POD_NAME", "CNI_ARGS"),
            ("CNI_ARGS", "=x", "CNI_ARGS"),
        ];
        for (var, val, needle) in cases {
            let vars: Vec<_> = ADD
                .iter()
                .copied()
                .map(|(k, v)| if k == *var { (k, *val) } else { (k, v) })
                .collect();
            let e = inv(&vars).unwrap_err();
            assert_eq!(e.code, 4, "{var}={val}");
            assert!(e.msg.contains(needle), "{var}={val}: {}", e.msg);
        }
    }

    #[test]
    fn version_status_and_gc_need_no_pod_variables() {
        for cmd in ["VERSION", "STATUS", "GC"] {
            inv(&[("CNI_COMMAND", cmd)]).unwrap();
        }
    }
}
