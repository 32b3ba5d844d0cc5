//! The ADD result, written in whichever version the runtime asked for.
//!
//! The agent answers with an [`AddResult`]; the plugin renders it. The
//! versions differ in small ways: 0.3.1 and 0.4.0 carry `"version": "4"` in
//! every IP entry, 1.0.0 dropped it, 1.1.0 allows an interface `mtu`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{error::CniError, version::Version};

/// An interface the plugin created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name (in its namespace).
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The pod's netns path for the pod side; absent for the host side.
    pub sandbox: Option<String>,
    /// MTU (written from 1.1.0 on).
    pub mtu: Option<u32>,
}

/// An address given to an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway for it.
    pub gateway: Option<IpAddr>,
    /// Index into [`AddResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route added in the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
}

/// What ADD made, version-independent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResult {
    /// Interfaces, host side first.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<RouteEntry>,
    /// DNS settings copied from the configuration.
    pub dns: Option<Value>,
}

impl AddResult {
    /// The result as JSON in `version`.
    pub fn to_json(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = json!({ "name": i.name, "mac": i.mac });
                if let Some(s) = &i.sandbox {
                    o["sandbox"] = s.clone().into();
                }
                if let (Some(mtu), true) = (i.mtu, version >= Version::V1_1_0) {
                    o["mtu"] = mtu.into();
                }
                o
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({ "address": ip.address.to_string() });
                if version < Version::V1_0_0 {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    o["version"] = family.into();
                }
                if let Some(gw) = ip.gateway {
                    o["gateway"] = gw.to_string().into();
                }
                if let Some(i) = ip.interface {
                    o["interface"] = i.into();
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = json!({ "dst": r.dst.to_string() });
                if let Some(gw) = r.gw {
                    o["gw"] = gw.to_string().into();
                }
                o
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": self.dns.clone().unwrap_or_else(|| json!({})),
        })
    }

    /// Reads a result of any supported version (a `prevResult`).
    pub fn parse(v: &Value) -> Result<Self, CniError> {
        let bad = |what: String| CniError::config(what);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let list = |key: &str| -> Result<Vec<Value>, CniError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(other) => Err(bad(format!("{key:?} must be a list, not {other}"))),
            }
        };
        let string = |o: &Value, key: &str| -> Result<Option<String>, CniError> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("{key:?} must be a string, not {other}"))),
            }
        };
        let net = |s: String| -> Result<IpNet, CniError> {
            s.parse()
                .map_err(|_| bad(format!("{s:?} is not an address with a prefix length")))
        };
        let addr = |s: String| -> Result<IpAddr, CniError> {
            s.parse()
                .map_err(|_| bad(format!("{s:?} is not an IP address")))
        };
        let mut out = AddResult::default();
        for i in list("interfaces")? {
            out.interfaces.push(Interface {
                name: string(&i, "name")?.ok_or_else(|| bad("an interface has no name".into()))?,
                mac: string(&i, "mac")?.unwrap_or_default(),
                sandbox: string(&i, "sandbox")?,
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
            });
        }
        for ip in list("ips")? {
            let address =
                net(string(&ip, "address")?
                    .ok_or_else(|| bad("an IP entry has no address".into()))?)?;
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(n) => Some(
                    n.as_u64()
                        .ok_or_else(|| bad(format!("IP entry interface {n} is not an index")))?
                        as usize,
                ),
            };
            out.ips.push(IpConfig {
                address,
                gateway: string(&ip, "gateway")?.map(addr).transpose()?,
                interface,
            });
        }
        for r in list("routes")? {
            out.routes.push(RouteEntry {
                dst: net(string(&r, "dst")?.ok_or_else(|| bad("a route has no dst".into()))?)?,
                gw: string(&r, "gw")?.map(addr).transpose()?,
            });
        }
        out.dns = obj.get("dns").filter(|d| !d.is_null()).cloned();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "ovl0123456789a".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: None,
                    mtu: Some(1450),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: Some("/proc/9/ns/net".into()),
                    mtu: Some(1450),
                },
            ],
            ips: vec![IpConfig {
                address: "10.32.1.7/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![RouteEntry {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn old_versions_carry_the_ip_version_field_new_ones_do_not() {
        for v in Version::ALL {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["address"], "10.32.1.7/32");
            assert_eq!(j["ips"][0]["gateway"], "169.254.1.1");
            assert_eq!(j["ips"][0]["interface"], 1);
            assert_eq!(j["interfaces"][1]["sandbox"], "/proc/9/ns/net");
            assert!(j["interfaces"][0].get("sandbox").is_none());
            assert_eq!(j["routes"][0]["dst"], "0.0.0.0/0");
            let has_version = j["ips"][0].get("version").is_some();
            assert_eq!(has_version, v < Version::V1_0_0, "{v}");
            let has_mtu = j["interfaces"][0].get("mtu").is_some();
            assert_eq!(has_mtu, v == Version::V1_1_0, "{v}");
        }
    }

    #[test]
    fn every_version_parses_back() {
        let mut want = sample();
        for v in Version::ALL {
            if v < Version::V1_1_0 {
                want.interfaces.iter_mut().for_each(|i| i.mtu = None);
            } else {
                want = sample();
            }
            let mut got = AddResult::parse(&sample().to_json(v)).unwrap();
            got.dns = None;
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn malformed_results_say_what_is_wrong() {
        for (j, needle) in [
            (json!([]), "not a JSON object"),
            (json!({"ips": "x"}), "\"ips\" must be a list"),
            (json!({"ips": [{"address": "10.0.0.1"}]}), "prefix length"),
            (json!({"ips": [{}]}), "no address"),
            (json!({"interfaces": [{"mac": "x"}]}), "no name"),
            (
                json!({"ips": [{"address": "10.0.0.1/32", "gateway": "x"}]}),
                "not an IP address",
            ),
        ] {
            let e = AddResult::parse(&j).unwrap_err();
            assert!(e.msg.contains(needle), "{j}: {}", e.msg);
        }
    }
}
