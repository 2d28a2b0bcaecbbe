//! The enricher on a large fake host: /proc reads per tick stay bounded whatever the number of
//! processes, failures and targets; a process is read once; owners follow exits.
use std::collections::HashMap;

use super::{Enricher, owners::PROC_READS_PER_TICK};
use crate::{
    event::{Body, Event},
    facts::{FactSource, Listener, MemcgInfo, Netstat, PathInfo, ProcInfo},
};

/// A host of `n` idle processes (pids 1000..), nginx 100/101, gunicorn 200 holding inode 5 on
/// `unix:/run/app.sock`; every /proc read is counted.
struct Host {
    procs: HashMap<u32, ProcInfo>,
    held: HashMap<u32, Vec<u64>>,
    sockets: Vec<(String, u64)>,
    process_reads: HashMap<u32, usize>,
    fd_reads: usize,
    children_reads: usize,
}

impl Host {
    fn new(n: u32) -> Self {
        let mut procs = HashMap::new();
        let mut add = |pid, ppid, comm: &str, cmdline: &str| {
            procs.insert(
                pid,
                ProcInfo {
                    pid,
                    ppid,
                    comm: comm.into(),
                    cmdline: cmdline.into(),
                    ..ProcInfo::default()
                },
            );
        };
        add(100, 1, "nginx", "nginx: master process");
        add(101, 100, "nginx", "nginx: worker process");
        add(200, 1, "gunicorn", "/venv/bin/gunicorn app:app");
        for pid in 1000..1000 + n {
            add(pid, 1, "sleep", "sleep 600");
        }
        let mut held = HashMap::new();
        held.insert(200, vec![5]);
        Self {
            procs,
            held,
            sockets: vec![("unix:/run/app.sock".into(), 5)],
            process_reads: HashMap::new(),
            fd_reads: 0,
            children_reads: 0,
        }
    }

    fn reads(&self) -> usize {
        self.process_reads.values().sum::<usize>() + self.fd_reads + self.children_reads
    }
}

impl FactSource for Host {
    fn listeners(&mut self) -> Vec<Listener> {
        unreachable!("the enricher looks owners up itself")
    }
    fn sockets(&mut self) -> Vec<(String, u64)> {
        self.sockets.clone()
    }
    fn socket_inodes(&mut self, pid: u32) -> Vec<u64> {
        self.fd_reads += 1;
        self.held.get(&pid).cloned().unwrap_or_default()
    }
    fn children(&mut self, pid: u32) -> Vec<u32> {
        self.children_reads += 1;
        let mut c: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.ppid == pid)
            .map(|p| p.pid)
            .collect();
        c.sort_unstable();
        c
    }
    fn process(&mut self, pid: u32) -> Option<ProcInfo> {
        *self.process_reads.entry(pid).or_default() += 1;
        self.procs.get(&pid).cloned()
    }
    fn processes(&mut self) -> Vec<ProcInfo> {
        self.procs.values().cloned().collect()
    }
    fn pids(&mut self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }
    fn path(&mut self, path: &str) -> PathInfo {
        PathInfo {
            path: path.into(),
            components: Vec::new(),
        }
    }
    fn memcg(&mut self, _pid: u32, _known_cgroup: &str) -> Option<MemcgInfo> {
        None
    }
    fn netstat(&mut self) -> Option<Netstat> {
        None
    }
}

fn failed(ns: u64, target: &str) -> Event {
    Event::of_task(
        String::new(),
        ns,
        101,
        "nginx",
        Body::ConnectFailed {
            target: target.into(),
            errno: 111,
            errno_name: "ECONNREFUSED".into(),
            source: "syscall".into(),
            count: 1,
        },
    )
}

const S: u64 = 1_000_000_000;

/// Runs `secs` one-second ticks with `rate` failures a second over `targets` distinct targets;
/// returns the most /proc reads any tick made.
fn run(e: &mut Enricher<Host>, secs: u64, rate: u64, targets: u64) -> usize {
    let mut worst = 0;
    for t in 0..secs {
        let before = e.src.reads();
        for i in 0..rate {
            let target = format!("unix:/run/t{}.sock", i % targets);
            e.before(&failed((t + 10) * S + i, &target));
        }
        e.periodic();
        worst = worst.max(e.src.reads() - before);
    }
    worst
}

#[test]
fn reads_per_tick_do_not_grow_with_the_host_or_the_failures() {
    for n in [100, 5000] {
        let mut e = Enricher::new(Host::new(n), vec!["nginx".into()]);
        e.snapshot(&[100]);
        assert_eq!(e.table().len(), n as usize + 3, "one full read at start");
        let start = e.src.reads();
        // Two minutes (two reconciliations) of 100 failures a second over 50 targets, one of
        // which has a listener nobody visible owns (a whole search of the host).
        e.src.sockets.push(("unix:/run/t7.sock".into(), 9));
        let worst = run(&mut e, 130, 100, 50);
        assert!(
            worst <= PROC_READS_PER_TICK + 1,
            "{n} processes: {worst} reads in one tick"
        );
        // The idle processes are never read again as processes (only their fds, searched for
        // the unowned socket within the budget).
        let reread = (1000..1000 + n)
            .filter(|p| e.src.process_reads.get(p).copied().unwrap_or(0) > 1)
            .count();
        assert_eq!(reread, 0, "{n}: idle processes re-read");
        assert!(e.src.reads() > start, "the search did run");
        if usize::try_from(n).is_ok_and(|n| n > PROC_READS_PER_TICK) {
            // The budget, not the host, stopped the search's ticks.
            assert!(worst >= PROC_READS_PER_TICK, "{n}: {worst}");
        }
    }
}

#[test]
fn a_process_is_read_once_and_owners_follow_exits() {
    let mut e = Enricher::new(Host::new(10), vec!["nginx".into()]);
    let snap = e.snapshot(&[100]);
    assert_eq!(
        snap.listeners.as_ref().map(|l| l[0].pid),
        Some(Some(200)),
        "{snap:?}"
    );
    // A new app process: exec read once, later events use the table.
    e.src.procs.insert(
        300,
        ProcInfo {
            pid: 300,
            ppid: 1,
            comm: "gunicorn".into(),
            cmdline: "/venv/bin/gunicorn app:app".into(),
            ..ProcInfo::default()
        },
    );
    let exec = Event::of_task(
        String::new(),
        11 * S,
        300,
        "gunicorn",
        Body::Exec {
            filename: "/venv/bin/gunicorn".into(),
            cmdline: None,
        },
    );
    let up = e.before(&exec).expect("facts");
    assert_eq!(up.processes.len(), 1);
    assert_eq!(e.src.process_reads.get(&300), Some(&1));
    e.periodic();
    e.periodic();
    assert_eq!(e.src.process_reads.get(&300), Some(&1), "not re-read");
    // The old master exits; the new one took over the socket.
    e.src.procs.remove(&200);
    e.src.held.remove(&200);
    e.src.held.insert(300, vec![5]);
    let exit = Event::of_task(
        String::new(),
        12 * S,
        200,
        "gunicorn",
        Body::ProcessExit {
            exit_code: Some(0),
            signal: None,
            signal_name: None,
            core_dumped: false,
        },
    );
    e.before(&exit);
    assert!(!e.table().contains(200));
    let up = e.periodic().expect("listeners changed");
    assert_eq!(
        up.listeners.map(|l| l[0].pid),
        Some(Some(300)),
        "the new owner, found after the old one exited"
    );
}

#[test]
fn forked_workers_are_found_from_their_masters_children() {
    let mut e = Enricher::new(Host::new(1000), vec!["nginx".into()]);
    e.snapshot(&[100]);
    e.src.procs.insert(
        102,
        ProcInfo {
            pid: 102,
            ppid: 100,
            comm: "nginx".into(),
            cmdline: "nginx: worker process".into(),
            ..ProcInfo::default()
        },
    );
    let mut sent = Vec::new();
    for _ in 0..super::CHILDREN_SCAN_EVERY {
        if let Some(up) = e.periodic() {
            sent.extend(up.processes.into_iter().map(|p| p.pid));
        }
    }
    assert_eq!(sent, [102], "the new worker, and nothing else");
    assert!(
        e.src.children_reads < 10,
        "only the masters' children files: {}",
        e.src.children_reads
    );
}
