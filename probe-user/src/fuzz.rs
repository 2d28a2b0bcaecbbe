//! Fuzzing of every parser that reads outside input, in the unit-test suite: random bytes and
//! mutations of valid samples (bit flips, truncation, splices), from a fixed seed so a failure
//! reproduces. The only property: no panic, and the engine survives whatever decodes.
#![cfg(test)]

use crate::{
    capture::{btf::KernelBtf, tracefs::Format},
    engine::{Engine, EngineConfig},
    event::{Clock, Decoder, Event},
    host::procfs::{parse_proc_net_tcp, parse_proc_net_unix},
};

/// xorshift64*: tiny, deterministic, good enough to shake parsers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
    /// A mutation of `sample`: flipped bytes, a truncation, or a splice of random bytes.
    fn mutate(&mut self, sample: &[u8]) -> Vec<u8> {
        let mut v = sample.to_vec();
        match self.below(3) {
            0 => {
                for _ in 0..=self.below(8) {
                    if !v.is_empty() {
                        let i = self.below(v.len());
                        v[i] ^= self.next().to_le_bytes()[0] | 1;
                    }
                }
            }
            1 => v.truncate(self.below(v.len() + 1)),
            _ => {
                let at = self.below(v.len() + 1);
                let junk = self.bytes(32);
                v.splice(at..at, junk);
            }
        }
        v
    }
}

const SAMPLES: &[&str] = &[
    r#"{"v":1,"ts":"2026-11-25T19:47:19Z","mono_ns":5,"pid":9,"tid":9,"comm":"nginx","uid":33,"gid":33,"cgroup_id":1,"kind":"connect_failed","target":"unix:/run/app.sock","errno":2,"errno_name":"ENOENT","source":"syscall"}"#,
    r#"{"v":1,"ts":"t","mono_ns":6,"pid":7,"tid":7,"comm":"gunicorn","kind":"process_exit","exit_code":3,"signal":null,"signal_name":null,"core_dumped":false}"#,
    r#"{"v":1,"ts":"t","mono_ns":7,"pid":6,"comm":"gunicorn","kind":"signal","signal":6,"signal_name":"SIGABRT","sender_pid":6,"target_pid":7,"target_comm":"gunicorn","code":0,"result":0}"#,
    r#"{"v":1,"ts":"t","mono_ns":8,"kind":"facts","processes":[{"pid":7,"ppid":6,"comm":"gunicorn","cmdline":"gunicorn app:app","uid":999,"gid":999}],"listeners":[{"target":"unix:/run/app.sock","pid":6}],"paths":[{"path":"/run/app.sock","components":[{"path":"/","exists":true,"mode":16877}]}]}"#,
    r#"{"v":1,"ts":"t","mono_ns":9,"pid":1,"kind":"oom_kill","victim_pid":7,"victim_comm":"gunicorn","total_vm_kb":1,"anon_rss_kb":1,"file_rss_kb":0,"shmem_rss_kb":0}"#,
];

#[test]
fn record_lines_never_panic_the_parser_or_the_engine() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut engine = Engine::new(EngineConfig::default());
    let mut decoded = 0;
    for i in 0..20_000 {
        let sample = SAMPLES[i % SAMPLES.len()].as_bytes();
        let input = if i % 4 == 0 {
            rng.bytes(256)
        } else {
            rng.mutate(sample)
        };
        let text = String::from_utf8_lossy(&input);
        if let Ok(ev) = serde_json::from_str::<Event>(&text) {
            engine.feed(&ev);
            decoded += 1;
        }
        if i % 1000 == 0 {
            let _ = engine.verdicts(u64::try_from(i).unwrap_or(0) * 1_000_000);
        }
    }
    let _ = engine.verdicts(u64::MAX / 2);
    // Mutations that keep a line valid must exist, or this test fuzzes nothing but the parser.
    assert!(decoded > 100, "only {decoded} mutated lines decoded");
}

#[test]
fn kernel_records_never_panic_the_decoder() {
    let mut rng = Rng(42);
    let clock = Clock {
        wall_minus_mono_ns: 0,
    };
    for _ in 0..20_000 {
        let mut bytes = rng.bytes(400);
        // Valid kinds more often than chance.
        if bytes.len() >= 4 && rng.below(2) == 0 {
            let kind = u32::try_from(rng.below(9)).unwrap_or(0);
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        if let Ok(ev) = Decoder::decode(&bytes, &clock) {
            // What decodes must serialise.
            assert!(serde_json::to_string(&ev).is_ok());
        }
    }
}

#[test]
fn proc_and_tracefs_text_never_panics() {
    let mut rng = Rng(7);
    let unix = "Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 12345 /run/app.sock\n";
    let tcp = "sl local rem st\n0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5555 1\n";
    let fmt = include_str!("../../tests/fixtures/inet_sock_set_state.format");
    for _ in 0..5_000 {
        let u = String::from_utf8_lossy(&rng.mutate(unix.as_bytes())).into_owned();
        let _ = parse_proc_net_unix(&u);
        let t = String::from_utf8_lossy(&rng.mutate(tcp.as_bytes())).into_owned();
        let _ = parse_proc_net_tcp(&t);
        let f = String::from_utf8_lossy(&rng.mutate(fmt.as_bytes())).into_owned();
        let _ = Format::parse("x", &f).optional("skaddr");
    }
}

#[test]
fn btf_blobs_never_panic() {
    let mut rng = Rng(99);
    // A header claiming sections past the end, and random blobs with a valid magic.
    for _ in 0..5_000 {
        let mut b = rng.bytes(512);
        if b.len() >= 2 {
            b[0] = 0x9f;
            b[1] = 0xeb;
        }
        if let Some(btf) = KernelBtf::parse(b) {
            let _ = btf.member_offset("task_struct", "exit_code");
        }
    }
}
