//! Tests of the allocator and its store, as any user.

mod crash;

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ipnet::Ipv4Net;

use super::{Allocation, Ipam, IpamError, Usage};

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR parses")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address parses")
}

fn open(dir: &Path, blocks: &[&str]) -> Ipam {
    Ipam::open(dir, blocks.iter().map(|b| net(b)).collect())
        .unwrap_or_else(|e| panic!("opening the store in {}: {e:?}", dir.display()))
}

fn alloc(ipam: &mut Ipam, container_id: &str) -> Allocation {
    ipam.allocate(container_id, "eth0", None)
        .unwrap_or_else(|e| panic!("allocating for {container_id}: {e:?}"))
}

/// Every file under `dir` (the lock file aside) with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).expect("listing the store") {
            let path = entry.expect("listing the store").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name() != Some("lock".as_ref()) {
                let bytes = fs::read(&path).expect("reading a store file");
                files.insert(path, bytes);
            }
        }
    }
    files
}

#[test]
fn allocate_is_idempotent_per_interface_and_release_frees_the_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = open(tmp.path(), &["10.32.1.0/24"]);

    let first = ipam
        .allocate("c1", "eth0", Some("default/web"))
        .expect("allocating");
    assert_eq!(first.pod.as_deref(), Some("default/web"));
    assert_eq!(
        ipam.allocate("c1", "eth0", None).expect("allocating again"),
        first,
        "a repeated ADD must return the same allocation"
    );
    let second = ipam.allocate("c1", "net1", None).expect("allocating");
    assert_ne!(second.ip, first.ip, "each interface gets its own address");
    assert_eq!(ipam.get("c1", "eth0"), Some(&first));
    assert_eq!(ipam.by_ip(second.ip), Some(&second));
    let file = tmp.path().join("allocations").join(first.ip.to_string());
    let on_disk: Allocation =
        serde_json::from_slice(&fs::read(&file).expect("reading the allocation file"))
            .expect("the allocation file is JSON of the allocation");
    assert_eq!(on_disk, first);

    assert_eq!(
        ipam.release("c1", "eth0").expect("releasing"),
        Some(first.clone())
    );
    assert_eq!(ipam.release("c1", "eth0").expect("releasing again"), None);
    assert_eq!(
        ipam.release("never", "eth0").expect("releasing unknown"),
        None
    );
    assert_eq!(ipam.get("c1", "eth0"), None);
    assert_eq!(ipam.by_ip(first.ip), None);
    assert!(!file.exists(), "release must remove {}", file.display());
    assert_eq!(ipam.get("c1", "net1"), Some(&second));
}

#[test]
fn a_full_28_hands_out_14_unique_addresses_then_exhausted_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = open(tmp.path(), &["10.32.1.16/28"]);
    let ips: HashSet<Ipv4Addr> = (0..14)
        .map(|i| alloc(&mut ipam, &format!("c{i}")).ip)
        .collect();
    assert_eq!(ips.len(), 14, "addresses must be unique: {ips:?}");
    assert!(!ips.contains(&ip("10.32.1.16")) && !ips.contains(&ip("10.32.1.31")));

    let before = snapshot(tmp.path());
    let error = ipam
        .allocate("one-too-many", "eth0", None)
        .expect_err("a 15th address cannot exist in a /28");
    assert!(
        matches!(error, IpamError::Exhausted { capacity: 14, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "all 14 addresses of blocks 10.32.1.16/28 are in use"
    );
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "a failed allocation must write nothing"
    );
    assert_eq!(ipam.get("one-too-many", "eth0"), None);
    assert_eq!(
        ipam.usage(),
        Usage {
            blocks: vec![net("10.32.1.16/28")],
            capacity: 14,
            used: 14,
            outside_blocks: 0
        }
    );
}

#[test]
fn network_and_broadcast_addresses_are_never_handed_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = open(tmp.path(), &["10.0.0.0/30", "10.0.1.0/31", "10.0.2.9/32"]);
    let mut got: Vec<Ipv4Addr> = (0..5)
        .map(|i| alloc(&mut ipam, &format!("c{i}")).ip)
        .collect();
    got.sort();
    let want = ["10.0.0.1", "10.0.0.2", "10.0.1.0", "10.0.1.1", "10.0.2.9"].map(ip);
    assert_eq!(got, want, "a /30 loses its ends, a /31 and a /32 do not");
    assert!(matches!(
        ipam.allocate("c5", "eth0", None),
        Err(IpamError::Exhausted { capacity: 5, .. })
    ));
}

#[test]
fn round_robin_reuses_a_just_released_address_only_when_nothing_else_is_free() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = open(tmp.path(), &["10.32.1.0/28"]);
    let a = alloc(&mut ipam, "a");
    let b = alloc(&mut ipam, "b");
    assert_eq!((a.ip, b.ip), (ip("10.32.1.1"), ip("10.32.1.2")));
    ipam.release("a", "eth0").expect("releasing");
    let next: Vec<Ipv4Addr> = (0..13)
        .map(|i| alloc(&mut ipam, &format!("n{i}")).ip)
        .collect();
    assert_eq!(
        next[0],
        ip("10.32.1.3"),
        "the search continues after the last allocation"
    );
    assert_eq!(next[12], a.ip, "the released address comes back last");
    assert!(!next[..12].contains(&a.ip), "{next:?}");
}

#[test]
fn reopening_keeps_every_allocation_and_the_cursor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let before: Vec<Allocation> = {
        let mut ipam = open(tmp.path(), &["10.32.1.0/24"]);
        for i in 0..5 {
            ipam.allocate(&format!("c{i}"), "eth0", Some(&format!("ns/pod{i}")))
                .expect("allocating");
        }
        ipam.release("c0", "eth0").expect("releasing");
        ipam.release("c1", "eth0").expect("releasing");
        ipam.allocations().cloned().collect()
    };
    let mut ipam = open(tmp.path(), &["10.32.1.0/24"]);
    let after: Vec<Allocation> = ipam.allocations().cloned().collect();
    assert_eq!(after, before);
    assert!(
        after.is_sorted_by_key(|a| a.ip),
        "allocations() is sorted by address"
    );
    assert_eq!(
        alloc(&mut ipam, "new").ip,
        ip("10.32.1.6"),
        "the cursor survives a restart, so .1 and .2 are not reused at once"
    );
}

#[test]
fn set_blocks_moves_new_allocations_and_keeps_old_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = Ipam::open(tmp.path(), Vec::new()).expect("opening without blocks");
    assert!(matches!(
        ipam.allocate("c0", "eth0", None),
        Err(IpamError::NoBlocks)
    ));

    ipam.set_blocks(vec![net("10.32.1.0/24")]);
    let old = alloc(&mut ipam, "old");
    ipam.set_blocks(vec![net("10.32.2.7/24"), net("10.32.2.0/25")]);
    assert_eq!(ipam.blocks(), [net("10.32.2.0/24")]);
    let new = alloc(&mut ipam, "new");
    assert!(net("10.32.2.0/24").contains(&new.ip), "{new:?}");
    assert_eq!(ipam.get("old", "eth0"), Some(&old));
    assert_eq!(ipam.allocations().count(), 2);
    let usage = ipam.usage();
    assert_eq!(
        (usage.capacity, usage.used, usage.outside_blocks),
        (254, 1, 1)
    );
    assert_eq!(ipam.release("old", "eth0").expect("releasing"), Some(old));

    drop(ipam);
    let ipam = open(tmp.path(), &["10.32.3.0/24"]);
    assert_eq!(
        ipam.get("new", "eth0"),
        Some(&new),
        "allocations outside the blocks survive a restart"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = open(tmp.path(), &["10.32.1.0/24"]);
    match Ipam::open(tmp.path(), vec![net("10.32.1.0/24")]) {
        Err(error @ IpamError::Locked { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&tmp.path().display().to_string()),
                "the error must name the directory: {message}"
            );
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("a second open of a locked store succeeded"),
    }
    drop(first);
    open(tmp.path(), &["10.32.1.0/24"]);
}

#[test]
fn bad_container_ids_and_interface_names_are_rejected_without_writing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ipam = open(tmp.path(), &["10.32.1.0/24"]);
    let long_id = "x".repeat(257);
    let bad = [
        ("", "eth0"),
        ("a/b", "eth0"),
        ("a\0b", "eth0"),
        ("a\nb", "eth0"),
        (long_id.as_str(), "eth0"),
        ("c", ""),
        ("c", "eth/0"),
        ("c", "et\0h"),
        ("c", "eth 0"),
        ("c", "eth:0"),
        ("c", ".."),
        ("c", "sixteen-bytes-xx"),
    ];
    let before = snapshot(tmp.path());
    for (container_id, ifname) in bad {
        for result in [
            ipam.allocate(container_id, ifname, None).map(Some),
            ipam.release(container_id, ifname),
        ] {
            match result {
                Err(IpamError::InvalidId { .. }) => {}
                other => panic!("{container_id:?} {ifname:?} must be rejected, got {other:?}"),
            }
        }
    }
    assert_eq!(snapshot(tmp.path()), before);
    ipam.allocate(&"x".repeat(256), "fifteen-bytes-x", None)
        .expect("the longest valid names are accepted");
}

#[test]
fn parallel_allocations_get_unique_addresses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ipam = Arc::new(Mutex::new(open(tmp.path(), &["10.32.1.0/24"])));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ipam = Arc::clone(&ipam);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let mut ipam = ipam.lock().expect("no thread panicked holding the lock");
                        alloc(&mut ipam, &format!("t{t}-{i}")).ip
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ips: HashSet<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("allocating thread"))
        .collect();
    assert_eq!(ips.len(), 200, "200 allocations must get 200 addresses");
    let ipam = ipam.lock().expect("no thread panicked holding the lock");
    assert_eq!(ipam.usage().used, 200);
    let files = fs::read_dir(tmp.path().join("allocations"))
        .expect("listing")
        .count();
    assert_eq!(files, 200);
}

#[test]
fn open_deletes_leftover_temp_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(open(tmp.path(), &["10.32.1.0/24"]));
    let leftovers = [
        tmp.path().join("allocations/.tmp-1-0"),
        tmp.path().join(".tmp-1-1"),
    ];
    for path in &leftovers {
        fs::write(path, b"{\"ip\":").expect("writing a half-written temp file");
    }
    let ipam = open(tmp.path(), &["10.32.1.0/24"]);
    for path in &leftovers {
        assert!(!path.exists(), "{} survived open", path.display());
    }
    assert_eq!(ipam.allocations().count(), 0);
}

#[test]
fn an_edited_allocation_file_stops_open_with_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(open(tmp.path(), &["10.32.1.0/24"]));
    let path = tmp.path().join("allocations/10.32.1.5");
    for contents in [
        "not json",
        r#"{"ip":"10.32.1.6","container_id":"c","ifname":"eth0"}"#,
    ] {
        fs::write(&path, contents).expect("writing a bad allocation file");
        match Ipam::open(tmp.path(), Vec::new()) {
            Err(IpamError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok(_) => panic!("{contents:?} was accepted as an allocation"),
        }
    }
}
