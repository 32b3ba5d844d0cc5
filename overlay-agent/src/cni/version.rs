//! The CNI specification versions the plugin speaks.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::error::CniError;

/// A CNI specification version this plugin implements. Results are written
/// in the version the runtime asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Version {
    /// 0.3.1: ADD and DEL; IP entries carry `"version": "4"`.
    #[serde(rename = "0.3.1")]
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    #[serde(rename = "0.4.0")]
    V0_4_0,
    /// 1.0.0: IP entries lose their `version` field.
    #[serde(rename = "1.0.0")]
    V1_0_0,
    /// 1.1.0: adds STATUS and GC.
    #[serde(rename = "1.1.0")]
    V1_1_0,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 4] = [
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// The newest version, used for replies when the request's version is
    /// unknown.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether CHECK exists in this version (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// Whether STATUS and GC exist in this version (1.1.0 and later).
    pub fn has_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::new(
                    super::error::code::INCOMPATIBLE_VERSION,
                    format!(
                        "cniVersion {s:?} is not supported by overlay-cni (supported: {})",
                        supported_list()
                    ),
                )
            })
    }
}

/// The supported versions as a comma-separated list for messages.
pub fn supported_list() -> String {
    Version::ALL.map(Version::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_unknown_ones_are_incompatible() {
        for v in Version::ALL {
            assert_eq!(v.as_str().parse::<Version>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{v}\""));
        }
        for bad in ["0.3.0", "0.2.0", "1.2.0", "", "1.0"] {
            let e = bad.parse::<Version>().unwrap_err();
            assert_eq!(e.code, 1, "{bad}");
            assert!(e.msg.contains("not supported"), "{}", e.msg);
        }
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_status_and_gc());
        assert!(Version::V1_1_0.has_status_and_gc());
    }
}
