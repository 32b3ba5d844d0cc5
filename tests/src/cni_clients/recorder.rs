//! A plugin directory of wrapper scripts that record every CNI call and then
//! run the real plugin with the same input, so a test can assert what a
//! client really sent (ctr's DEL comes with an empty `CNI_NETNS`, for one).

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use super::scratch::ScratchDir;

/// Wrappers for every executable of some plugin directories, and the log
/// of their calls. Both live in one scratch directory removed on drop.
pub struct PluginRecorder {
    dir: ScratchDir,
}

/// One recorded plugin call.
#[derive(Debug, Clone)]
pub struct PluginCall {
    /// The plugin's file name, e.g. `bridge`.
    pub plugin: String,
    /// Its whole environment: the `CNI_*` variables (`CNI_COMMAND`,
    /// `CNI_NETNS`, ...) and whatever the client passed on (one line per
    /// variable; a value with a newline is cut there).
    pub env: BTreeMap<String, String>,
    /// Its stdin, the network configuration the client built.
    pub stdin: String,
    /// What it printed on stdout (its result).
    pub stdout: String,
    /// Its exit code.
    pub exit_code: i32,
}

impl PluginCall {
    /// `CNI_COMMAND`.
    pub fn command(&self) -> &str {
        self.var("CNI_COMMAND")
    }

    /// The environment variable `name`, empty when absent.
    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).map_or("", String::as_str)
    }

    /// stdin parsed as JSON.
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdin)
            .unwrap_or_else(|e| panic!("{} got non-JSON stdin {:?}: {e}", self.plugin, self.stdin))
    }
}

impl PluginRecorder {
    /// Writes a wrapper for every executable in `plugin_dirs` (the first
    /// directory holding a name wins, as in `CNI_PATH` lookup).
    pub fn new(tag: &str, plugin_dirs: &[&Path]) -> Self {
        let dir = ScratchDir::new("rec", tag);
        let bin = dir.subdir("bin");
        let log = dir.subdir("calls");
        for plugin_dir in plugin_dirs {
            let entries = std::fs::read_dir(plugin_dir)
                .unwrap_or_else(|e| panic!("reading {}: {e}", plugin_dir.display()));
            for entry in entries.flatten() {
                let real = entry.path();
                let executable = std::fs::metadata(&real)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                let wrapper = bin.join(entry.file_name());
                if executable && !wrapper.exists() {
                    write_wrapper(&wrapper, &real, &log);
                }
            }
        }
        Self { dir }
    }

    /// The directory of wrappers, to use as the client's plugin directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<PluginCall> {
        let log = self.dir.path().join("calls");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&log)
            .unwrap_or_else(|e| panic!("reading {}: {e}", log.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        // Names start with the 19-digit nanosecond time, so they sort by age.
        dirs.sort();
        dirs.iter().map(|d| read_call(d)).collect()
    }

    /// The calls with `CNI_COMMAND` = `command`, oldest first.
    pub fn calls_of(&self, command: &str) -> Vec<PluginCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.command() == command)
            .collect()
    }
}

fn write_wrapper(wrapper: &Path, real: &Path, log: &Path) {
    let name = wrapper
        .file_name()
        .and_then(|n| n.to_str())
        .expect("plugin name");
    // The plugin's stderr passes straight through; stdout is kept and
    // replayed so the client still gets the result.
    let script = format!(
        "#!/bin/sh\n\
         # Records this CNI call, then runs the real plugin with the same stdin.\n\
         d='{log}'/$(date +%s%N)-$$-{name}\n\
         mkdir \"$d\"\n\
         env > \"$d/env\"\n\
         cat > \"$d/stdin\"\n\
         '{real}' \"$@\" < \"$d/stdin\" > \"$d/stdout\"\n\
         rc=$?\n\
         echo $rc > \"$d/rc\"\n\
         cat \"$d/stdout\"\n\
         exit $rc\n",
        log = log.display(),
        real = real.display(),
    );
    std::fs::write(wrapper, script)
        .unwrap_or_else(|e| panic!("writing {}: {e}", wrapper.display()));
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", wrapper.display()));
}

fn read_call(dir: &Path) -> PluginCall {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let plugin = name.splitn(3, '-').nth(2).unwrap_or_default().to_owned();
    let env = read("env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    PluginCall {
        plugin,
        env,
        stdin: read("stdin"),
        stdout: read("stdout"),
        // No rc file: the call is still running or the wrapper was killed.
        exit_code: read("rc").trim().parse().unwrap_or(-1),
    }
}
