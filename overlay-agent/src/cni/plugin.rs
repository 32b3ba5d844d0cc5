//! `overlay-cni`'s logic: validate the invocation, ask the agent, render
//! its answer in the requested version.
//!
//! The plugin keeps no state. Everything is checked here before the agent
//! is asked, so bad input never reaches it; the agent checks again what
//! only it can (interface names in the pod, free addresses).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{
    Command, Invocation, Version, config,
    error::{CniError, code},
};
use crate::{
    api::{CheckRequest, DelRequest, PodRequest, Reply, Request, client::ClientError},
    paths,
};

/// What the plugin prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    /// JSON for stdout (empty for a successful DEL, STATUS or GC).
    pub stdout: String,
    /// Process exit code: 0 on success.
    pub exit: u8,
}

/// Runs one invocation. `call` asks the agent at a socket path
/// ([`crate::api::client::call`] in production).
pub fn run<V, K, S>(
    vars: V,
    stdin: &[u8],
    call: impl FnOnce(&Path, &Request) -> Result<Reply, ClientError>,
) -> Output
where
    V: IntoIterator<Item = (K, S)>,
    K: AsRef<str>,
    S: AsRef<str>,
{
    // Errors are written in the version the runtime asked for when it can
    // be read at all, else in the newest.
    let reply_version = config::sniff_version(stdin)
        .and_then(|v| v.parse::<Version>().ok())
        .unwrap_or(Version::LATEST);
    match run_inner(vars, stdin, reply_version, call) {
        Ok(stdout) => Output { stdout, exit: 0 },
        Err(e) => Output {
            stdout: e.to_json(reply_version.as_str()).to_string(),
            exit: 1,
        },
    }
}

fn run_inner<V, K, S>(
    vars: V,
    stdin: &[u8],
    asked: Version,
    call: impl FnOnce(&Path, &Request) -> Result<Reply, ClientError>,
) -> Result<String, CniError>
where
    V: IntoIterator<Item = (K, S)>,
    K: AsRef<str>,
    S: AsRef<str>,
{
    let inv = Invocation::from_vars(vars)?;
    if inv.command == Command::Version {
        return Ok(json!({
            "cniVersion": asked.as_str(),
            "supportedVersions": Version::ALL.map(Version::as_str),
        })
        .to_string());
    }
    let conf = config::parse(stdin)?;
    let version = conf.cni_version;
    let socket: PathBuf = conf
        .agent_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(paths::AGENT_SOCKET));
    let container_id = || inv.container_id.clone().unwrap_or_default();
    let ifname = || inv.ifname.clone().unwrap_or_default();

    let request = match inv.command {
        Command::Version => unreachable!("answered above"),
        Command::Add => {
            if conf.prev_result.is_some() {
                return Err(CniError::config(
                    "overlay-cni creates the pod's interface and must come first in the plugin \
                     list, but it was given a prevResult",
                ));
            }
            let netns = inv.netns.clone().expect("validated for ADD");
            require_netns(&netns)?;
            Request::Add(PodRequest {
                container_id: container_id(),
                netns,
                ifname: ifname(),
                pod: inv.pod(),
                dns: conf.dns.clone(),
            })
        }
        Command::Del => Request::Del(DelRequest {
            container_id: container_id(),
            netns: inv.netns.clone(),
            ifname: ifname(),
            pod: inv.pod(),
        }),
        Command::Check => {
            if !version.has_check() {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "CHECK does not exist in cniVersion {version}; it needs 0.4.0 or later"
                    ),
                ));
            }
            let prev_result = conf.prev_result.clone().ok_or_else(|| {
                CniError::config("CHECK needs the prevResult of ADD in the network configuration")
            })?;
            let netns = inv.netns.clone().expect("validated for CHECK");
            require_netns(&netns)?;
            Request::Check(CheckRequest {
                container_id: container_id(),
                netns,
                ifname: ifname(),
                prev_result,
            })
        }
        Command::Status | Command::Gc => {
            if !version.has_status_and_gc() {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "{:?} does not exist in cniVersion {version}; it needs 1.1.0",
                        inv.command
                    ),
                ));
            }
            if inv.command == Command::Status {
                Request::Status
            } else {
                Request::Gc {
                    valid: conf.valid_attachments.clone().ok_or_else(|| {
                        CniError::config(
                            "GC needs \"cni.dev/valid-attachments\" in the network configuration \
                             (without it every pod would be removed)",
                        )
                    })?,
                }
            }
        }
    };

    let reply = call(&socket, &request).map_err(|e| {
        let code = match (inv.command, e.is_not_running()) {
            (Command::Status, true) => code::PLUGIN_NOT_AVAILABLE,
            _ => code::TRY_AGAIN_LATER,
        };
        e.to_cni(code)
    })?;
    match reply {
        Reply::Err(e) => Err(e),
        Reply::Ok(Some(result)) => Ok(result.to_json(version).to_string()),
        Reply::Ok(None) => Ok(String::new()),
    }
}

fn require_netns(netns: &Path) -> Result<(), CniError> {
    if netns.exists() {
        Ok(())
    } else {
        Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "CNI_NETNS={} does not exist: the container's network namespace is gone",
                netns.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::Value;

    use super::*;
    use crate::cni::{AddResult, IpConfig};

    type Vars = Vec<(&'static str, String)>;

    fn vars(cmd: &str) -> Vars {
        vec![
            ("CNI_COMMAND", cmd.to_owned()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/proc/self/ns/net".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p".into()),
        ]
    }

    fn conf(version: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"{version}","name":"overlay","type":"overlay-cni","agentSocket":"/run/t.sock"{extra}}}"#
        )
        .into_bytes()
    }

    fn result() -> AddResult {
        AddResult {
            ips: vec![IpConfig {
                address: "10.32.1.2/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            ..Default::default()
        }
    }

    /// Runs the plugin against a fake agent; returns the output, its JSON
    /// and the request the agent saw.
    fn invoke(
        vars: Vec<(&'static str, String)>,
        stdin: &[u8],
        reply: Result<Reply, ClientError>,
    ) -> (Output, Value, Option<Request>) {
        let seen = RefCell::new(None);
        let out = run(vars, stdin, |socket, req| {
            assert_eq!(socket, Path::new("/run/t.sock"));
            *seen.borrow_mut() = Some(req.clone());
            reply
        });
        let json = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout).unwrap()
        };
        (out, json, seen.into_inner())
    }

    fn not_running() -> Result<Reply, ClientError> {
        Err(ClientError::NotRunning {
            path: "/run/t.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        })
    }

    #[test]
    fn add_asks_the_agent_and_prints_the_result_in_each_version() {
        for v in Version::ALL {
            let (out, json, req) = invoke(
                vars("ADD"),
                &conf(v.as_str(), ""),
                Ok(Reply::Ok(Some(result()))),
            );
            assert_eq!(out.exit, 0);
            assert_eq!(json["cniVersion"], v.as_str());
            assert_eq!(json["ips"][0]["address"], "10.32.1.2/32");
            let Some(Request::Add(add)) = req else {
                panic!("agent saw {req:?}")
            };
            assert_eq!(add.container_id, "c1");
            assert_eq!(add.pod.unwrap().to_string(), "ns/p");
        }
    }

    #[test]
    fn version_lists_every_supported_version_without_asking_the_agent() {
        let (out, json, req) = invoke(
            vec![("CNI_COMMAND", "VERSION".into())],
            br#"{"cniVersion":"0.4.0"}"#,
            not_running(),
        );
        assert_eq!(out.exit, 0);
        assert_eq!(req, None);
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(
            json["supportedVersions"],
            serde_json::json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn agent_down_means_try_again_later_and_status_says_not_available() {
        let (out, json, _) = invoke(vars("ADD"), &conf("1.0.0", ""), not_running());
        assert_eq!(out.exit, 1);
        assert_eq!(json["code"], 11);
        assert!(
            json["msg"]
                .as_str()
                .unwrap()
                .contains("agent is not running"),
            "{json}"
        );
        let (out, json, _) = invoke(vars("STATUS"), &conf("1.1.0", ""), not_running());
        assert_eq!((out.exit, json["code"].as_u64()), (1, Some(50)));
    }

    #[test]
    fn agent_errors_are_printed_in_the_requested_version() {
        let e = CniError::new(code::NO_ADDRESS, "block full");
        let (out, json, _) = invoke(vars("ADD"), &conf("0.3.1", ""), Ok(Reply::Err(e)));
        assert_eq!(out.exit, 1);
        assert_eq!(json["cniVersion"], "0.3.1");
        assert_eq!(json["code"], 101);
        assert_eq!(json["msg"], "block full");
    }

    #[test]
    fn bad_input_never_reaches_the_agent() {
        let missing_ns = vec![
            ("CNI_COMMAND", "ADD".to_owned()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/nonexistent/ns".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ];
        let cases: Vec<(Vars, Vec<u8>, u32, &str)> = vec![
            (vec![], conf("1.0.0", ""), 4, "CNI_COMMAND"),
            (vars("ADD"), b"{not json".to_vec(), 6, "not valid JSON"),
            (vars("ADD"), conf("2.0.0", ""), 1, "2.0.0"),
            (missing_ns, conf("1.0.0", ""), 3, "/nonexistent/ns"),
            (vars("CHECK"), conf("0.3.1", ""), 1, "CHECK"),
            (vars("CHECK"), conf("1.0.0", ""), 7, "prevResult"),
            (vars("STATUS"), conf("1.0.0", ""), 1, "1.1.0"),
            (vars("GC"), conf("1.1.0", ""), 7, "valid-attachments"),
            (
                vars("ADD"),
                conf("1.0.0", r#","prevResult":{"cniVersion":"1.0.0"}"#),
                7,
                "first",
            ),
        ];
        for (vars, stdin, code, needle) in cases {
            let (out, json, req) = invoke(vars, &stdin, Ok(Reply::Ok(None)));
            assert_eq!(out.exit, 1, "{json}");
            assert_eq!(json["code"], code, "{json}");
            assert!(json["msg"].as_str().unwrap().contains(needle), "{json}");
            assert_eq!(req, None, "{json}");
        }
    }

    #[test]
    fn del_without_netns_or_prev_result_still_asks_the_agent() {
        let mut v = vars("DEL");
        v.retain(|(k, _)| *k != "CNI_NETNS");
        let (out, _, req) = invoke(v, &conf("1.1.0", ""), Ok(Reply::Ok(None)));
        assert_eq!(
            out,
            Output {
                stdout: String::new(),
                exit: 0
            }
        );
        let Some(Request::Del(del)) = req else {
            panic!("{req:?}")
        };
        assert_eq!(del.netns, None);
    }

    #[test]
    fn gc_passes_the_valid_attachments() {
        let (out, _, req) = invoke(
            vars("GC"),
            &conf(
                "1.1.0",
                r#","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]"#,
            ),
            Ok(Reply::Ok(None)),
        );
        assert_eq!(out.exit, 0);
        let Some(Request::Gc { valid }) = req else {
            panic!("{req:?}")
        };
        assert_eq!(valid.len(), 1);
    }
}
