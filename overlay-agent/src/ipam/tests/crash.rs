//! Kill a process churning allocations at random moments and check the store
//! after every kill.
//!
//! The parent test re-runs this test binary with `--exact` on
//! [`crash_child_churns_allocations_when_spawned_by_the_crash_test`] and an
//! environment variable that makes it loop; without the variable that test
//! returns at once. The child logs what it has done, one line per `write`,
//! to a file per round:
//!
//! - `S`: the store is open;
//! - `A <container id> <ip>`: `allocate` returned this address;
//! - `r <container id>`: `release` is about to be called;
//! - `R <container id>`: `release` returned.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant, SystemTime},
};

use super::{net, open};
use crate::ipam::{Allocation, Ipam, IpamError};

/// Store directory; its presence makes the child test churn.
const DIR_ENV: &str = "OVERLAY_IPAM_CRASH_DIR";
/// File the child logs to.
const LOG_ENV: &str = "OVERLAY_IPAM_CRASH_LOG";
/// Round number, which makes container ids unique across children.
const ROUND_ENV: &str = "OVERLAY_IPAM_CRASH_ROUND";

/// Small enough to fill up, so that `Exhausted` and wrapping happen too.
const BLOCK: &str = "10.77.0.0/27";
const IFNAME: &str = "eth0";

/// Bounds of the whole test.
const MAX_ROUNDS: u32 = 40;
const MAX_TIME: Duration = Duration::from_secs(20);
/// A child that outlives its parent stops by itself after this.
const CHILD_MAX_TIME: Duration = Duration::from_secs(10);

#[test]
fn crash_child_churns_allocations_when_spawned_by_the_crash_test() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let log_path = std::env::var_os(LOG_ENV).expect("the parent sets the log path");
    let round = std::env::var(ROUND_ENV).expect("the parent sets the round");
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log_path)
        .expect("opening the crash log");
    // One `write` per line, so a kill never leaves half a line in between.
    let mut say = |line: String| {
        log.write_all(format!("{line}\n").as_bytes())
            .expect("writing the crash log");
    };

    let mut ipam = open(Path::new(&dir), &[BLOCK]);
    say("S".to_owned());
    let mut live: Vec<String> = ipam.allocations().map(|a| a.container_id.clone()).collect();
    let mut rng = Rng::seeded();
    let deadline = Instant::now() + CHILD_MAX_TIME;
    let mut n = 0_u64;
    while Instant::now() < deadline {
        n += 1;
        let release = !live.is_empty() && rng.below(3) == 0;
        if !release {
            let container_id = format!("r{round}-{n}");
            match ipam.allocate(&container_id, IFNAME, None) {
                Ok(allocation) => {
                    say(format!("A {container_id} {}", allocation.ip));
                    live.push(container_id);
                    continue;
                }
                Err(IpamError::Exhausted { .. }) => {}
                Err(other) => panic!("allocating {container_id}: {other:?}"),
            }
        }
        let container_id = live.swap_remove(rng.below(live.len() as u64) as usize);
        say(format!("r {container_id}"));
        ipam.release(&container_id, IFNAME)
            .unwrap_or_else(|e| panic!("releasing {container_id}: {e:?}"));
        say(format!("R {container_id}"));
    }
}

/// What the child's log says about one container's allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Present(Ipv4Addr),
    /// A release was started; the kill may have come before or after it.
    Either,
    Absent,
}

#[test]
fn a_kill_at_any_instant_leaves_a_consistent_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().expect("finding the test binary");
    let child_test = concat!(
        module_path!(),
        "::crash_child_churns_allocations_when_spawned_by_the_crash_test"
    )
    .split_once("::")
    .expect("module_path! starts with the crate name")
    .1;
    let mut rng = Rng::seeded();
    let seed = rng.0;
    let started = Instant::now();
    let mut expected: HashMap<String, Expect> = HashMap::new();
    let (mut rounds, mut logged, mut temp_files_seen) = (0, 0, 0);

    while rounds < MAX_ROUNDS && started.elapsed() < MAX_TIME {
        rounds += 1;
        let log = tmp.path().join(format!("log-{rounds}"));
        let output = tmp.path().join(format!("output-{rounds}"));
        let out = File::create(&output).expect("creating the child's output file");
        let child = Command::new(&exe)
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &dir)
            .env(LOG_ENV, &log)
            .env(ROUND_ENV, rounds.to_string())
            .stdout(out.try_clone().expect("duplicating a file handle"))
            .stderr(out)
            .spawn()
            .expect("spawning the crash child");
        let mut child = KillOnDrop(child);
        // Most kills land while the child churns; every fourth lands early,
        // possibly while it opens the store.
        if rounds % 4 != 0 {
            wait_for_start(&mut child, &log, &output);
        }
        thread::sleep(Duration::from_millis(5 + rng.below(46)));
        if let Some(status) = child.0.try_wait().expect("polling the child") {
            panic!(
                "the crash child exited by itself ({status}):\n{}",
                read(&output)
            );
        }
        child.0.kill().expect("killing the crash child");
        child.0.wait().expect("reaping the crash child");

        temp_files_seen += count_temp_files(&dir);
        let text = fs::read_to_string(&log).unwrap_or_default();
        // A line without its newline was cut by the kill.
        let lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        for line in lines {
            logged += 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["S"] => {}
                ["A", id, ip] => {
                    let ip = ip.parse().expect("the child logs addresses");
                    expected.insert(id.to_owned(), Expect::Present(ip));
                }
                ["r", id] => {
                    expected.insert(id.to_owned(), Expect::Either);
                }
                ["R", id] => {
                    expected.insert(id.to_owned(), Expect::Absent);
                }
                _ => panic!("unexpected crash log line {line:?}"),
            }
        }

        let ipam = Ipam::open(&dir, vec![net(BLOCK)]).unwrap_or_else(|e| {
            panic!("round {rounds} (seed {seed}): reopening after a kill: {e:?}")
        });
        check(&ipam, &dir, &expected)
            .unwrap_or_else(|e| panic!("round {rounds} (seed {seed}): {e}"));
        // From now on the store is the truth; the next child starts from it.
        for state in expected.values_mut() {
            if *state == Expect::Either {
                *state = Expect::Absent;
            }
        }
        for allocation in ipam.allocations() {
            expected.insert(
                allocation.container_id.clone(),
                Expect::Present(allocation.ip),
            );
        }
    }
    eprintln!(
        "{rounds} kills, {logged} logged steps, {temp_files_seen} temporary files cleaned up"
    );
    assert!(rounds >= 10, "only {rounds} rounds ran in {MAX_TIME:?}");
    assert!(
        logged > rounds,
        "the children did almost nothing: {logged} steps"
    );
}

/// Checks the reopened store against the child's log and the raw files.
fn check(ipam: &Ipam, dir: &Path, expected: &HashMap<String, Expect>) -> Result<(), String> {
    let leftovers = count_temp_files(dir);
    if leftovers > 0 {
        return Err(format!("{leftovers} temporary files survived open"));
    }
    let block = net(BLOCK);
    let mut ips = HashSet::new();
    let mut owners = HashSet::new();
    for allocation in ipam.allocations() {
        if !ips.insert(allocation.ip) || !owners.insert(&allocation.container_id) {
            return Err(format!("{allocation:?} shares an address or owner"));
        }
        if !block.contains(&allocation.ip)
            || allocation.ip == block.network()
            || allocation.ip == block.broadcast()
        {
            return Err(format!("{allocation:?} is not a usable address of {block}"));
        }
    }
    let files = fs::read_dir(dir.join("allocations")).map_err(|e| format!("listing: {e}"))?;
    let mut count = 0;
    for entry in files {
        let path = entry.map_err(|e| format!("listing: {e}"))?.path();
        let bytes = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let allocation: Allocation = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} does not parse: {e}", path.display()))?;
        if ipam.by_ip(allocation.ip) != Some(&allocation) {
            return Err(format!("{} is not what the store loaded", path.display()));
        }
        count += 1;
    }
    if count != ips.len() {
        return Err(format!("{count} files but {} allocations", ips.len()));
    }
    for (id, state) in expected {
        let got = ipam.get(id, IFNAME).map(|a| a.ip);
        match (state, got) {
            (Expect::Present(ip), Some(got)) if *ip == got => {}
            (Expect::Either, _) | (Expect::Absent, None) => {}
            (state, got) => return Err(format!("{id}: expected {state:?}, store has {got:?}")),
        }
    }
    Ok(())
}

fn count_temp_files(dir: &Path) -> usize {
    [dir.to_owned(), dir.join("allocations")]
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .count()
}

/// Waits (at most 5 s) until the child has opened the store.
fn wait_for_start(child: &mut KillOnDrop, log: &Path, output: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::metadata(log).map_or(true, |m| m.len() == 0) {
        if let Some(status) = child.0.try_wait().expect("polling the child") {
            panic!(
                "the crash child exited by itself ({status}):\n{}",
                read(output)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the crash child did not start:\n{}",
            read(output)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Kills the child if the test panics before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xorshift64: enough randomness to spread kill moments and choices.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
