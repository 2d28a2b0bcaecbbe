//! Properties of every parser that reads outside input, in the unit-test suite: arbitrary input
//! and mutations of valid samples (flipped bytes, truncations, splices), shrunk to a minimal case
//! when one fails. What must hold: no panic; what decodes serialises and reads back the same; the
//! engine survives whatever decodes; the nginx dump splitter gives back the files it was given.
#![cfg(test)]

use std::fmt::Write as _;

use proptest::{collection::vec, prelude::*};

use crate::{
    capture::{btf::KernelBtf, tracefs::Format},
    check::nginx::{Dump, analyze, parse_dump},
    engine::{Engine, EngineConfig},
    event::{Clock, Decoder, Event},
    host::procfs::{parse_proc_net_tcp, parse_proc_net_unix},
};

/// Valid record lines, one of each common kind.
const RECORD_LINES: &[&str] = &[
    r#"{"v":1,"ts":"2026-11-25T19:47:19Z","mono_ns":5,"pid":9,"tid":9,"comm":"nginx","uid":33,"gid":33,"cgroup_id":1,"kind":"connect_failed","target":"unix:/run/app.sock","errno":2,"errno_name":"ENOENT","source":"syscall"}"#,
    r#"{"v":1,"ts":"t","mono_ns":6,"pid":7,"tid":7,"comm":"gunicorn","kind":"process_exit","exit_code":3,"signal":null,"signal_name":null,"core_dumped":false}"#,
    r#"{"v":1,"ts":"t","mono_ns":7,"pid":6,"comm":"gunicorn","kind":"signal","signal":6,"signal_name":"SIGABRT","sender_pid":6,"target_pid":7,"target_comm":"gunicorn","code":0,"result":0}"#,
    r#"{"v":1,"ts":"t","mono_ns":8,"kind":"facts","processes":[{"pid":7,"ppid":6,"comm":"gunicorn","cmdline":"gunicorn app:app","uid":999,"gid":999}],"listeners":[{"target":"unix:/run/app.sock","pid":6}],"paths":[{"path":"/run/app.sock","components":[{"path":"/","exists":true,"mode":16877}]}]}"#,
    r#"{"v":1,"ts":"t","mono_ns":9,"pid":1,"kind":"oom_kill","victim_pid":7,"victim_comm":"gunicorn","total_vm_kb":1,"anon_rss_kb":1,"file_rss_kb":0,"shmem_rss_kb":0}"#,
];

const PROC_NET_UNIX: &str = "Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 12345 /run/app.sock\n";
const PROC_NET_TCP: &str = "sl local rem st\n0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5555 1\n";
const TRACEFS_FORMAT: &str = include_str!("../../tests/fixtures/inet_sock_set_state.format");
const NGINX_DUMPS: &[&str] = &[
    include_str!("../../tests/fixtures/nginx/debian-T.txt"),
    include_str!("../../tests/fixtures/nginx/edge-T.txt"),
];

/// One change to a sample.
#[derive(Clone, Debug)]
enum Edit {
    /// XOR the byte at this position (modulo the length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the input at this position (modulo the length + 1).
    Truncate(usize),
    /// Insert these bytes at this position (modulo the length + 1).
    Splice(usize, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1..=u8::MAX).prop_map(|(at, m)| Edit::Flip(at, m)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => (any::<usize>(), vec(any::<u8>(), 1..32)).prop_map(|(at, b)| Edit::Splice(at, b)),
    ]
}

fn apply(sample: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = sample.to_vec();
    for e in edits {
        match e {
            Edit::Flip(at, mask) => {
                if !v.is_empty() {
                    let i = at % v.len();
                    v[i] ^= mask;
                }
            }
            Edit::Truncate(at) => v.truncate(at % (v.len() + 1)),
            Edit::Splice(at, bytes) => {
                let i = at % (v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
        }
    }
    v
}

/// Text that is either arbitrary bytes (read lossily) or a few edits of one of `samples`.
fn text_like(samples: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..256),
        3 => (0..samples.len(), vec(edit(), 1..6))
            .prop_map(move |(i, edits)| apply(samples[i].as_bytes(), &edits)),
    ]
    .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads a record line the way `gwtrace explain` does; what decodes must write back the same.
fn decode_line(line: &str) -> Option<Event> {
    let ev = serde_json::from_str::<Event>(line).ok()?;
    let again = serde_json::to_string(&ev).expect("a decoded event serialises");
    let back: Event = serde_json::from_str(&again).expect("a written event reads back");
    assert_eq!(back, ev, "round trip of {line}");
    Some(ev)
}

#[test]
fn every_record_line_sample_decodes_and_round_trips() {
    // The mutation strategy starts from these: if they did not decode, the properties below
    // would only ever exercise the error paths.
    for line in RECORD_LINES {
        assert!(decode_line(line).is_some(), "{line}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn record_lines_never_panic_the_decoder_or_the_engine(
        lines in vec(text_like(RECORD_LINES), 1..24),
    ) {
        let mut engine = Engine::new(EngineConfig::default());
        for (i, line) in lines.iter().enumerate() {
            if let Some(ev) = decode_line(line) {
                engine.feed(&ev);
            }
            let _ = engine.verdicts(u64::try_from(i).unwrap_or(0) * 1_000_000_000);
        }
        let _ = engine.verdicts(u64::MAX / 2);
    }

    #[test]
    fn kernel_records_never_panic_the_decoder(
        mut bytes in vec(any::<u8>(), 0..(2 * size_of::<probe_common::RawEvent>())),
        kind in 0u32..12,
        set_kind in any::<bool>(),
    ) {
        // A known kind more often than chance, so the per-kind paths are reached.
        if set_kind && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        let clock = Clock { wall_minus_mono_ns: 0 };
        if let Ok(ev) = Decoder::decode(&bytes, &clock) {
            let line = serde_json::to_string(&ev).expect("a decoded record serialises");
            let back: Event = serde_json::from_str(&line).expect("and reads back");
            prop_assert_eq!(back, ev);
        }
    }

    #[test]
    fn full_size_kernel_records_never_panic_the_decoder(
        mut bytes in vec(any::<u8>(), size_of::<probe_common::RawEvent>()),
        kind in 0u32..12,
    ) {
        // Every record of the right size with a known kind reaches the body decoding.
        bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        let clock = Clock { wall_minus_mono_ns: 0 };
        if let Ok(ev) = Decoder::decode(&bytes, &clock) {
            let line = serde_json::to_string(&ev).expect("a decoded record serialises");
            let back: Event = serde_json::from_str(&line).expect("and reads back");
            prop_assert_eq!(back, ev);
        }
    }

    #[test]
    fn proc_net_text_never_panics(
        unix in text_like(&[PROC_NET_UNIX]),
        tcp in text_like(&[PROC_NET_TCP]),
    ) {
        let _ = parse_proc_net_unix(&unix);
        let _ = parse_proc_net_tcp(&tcp);
    }

    #[test]
    fn tracefs_formats_never_panic(text in text_like(&[TRACEFS_FORMAT])) {
        let f = Format::parse("x", &text);
        let _ = f.optional("skaddr");
        let _ = f.offset("newstate");
    }

    #[test]
    fn btf_blobs_never_panic(mut blob in vec(any::<u8>(), 0..512)) {
        // The BTF magic, so the header and section checks are reached.
        if blob.len() >= 2 {
            blob[0] = 0x9f;
            blob[1] = 0xeb;
        }
        if let Some(btf) = KernelBtf::parse(blob) {
            let _ = btf.member_offset("task_struct", "exit_code");
        }
    }

    #[test]
    fn nginx_dumps_never_panic_the_parser_or_the_analysis(text in text_like(NGINX_DUMPS)) {
        if let Ok(dump) = parse_dump(&text) {
            let _ = analyze(&dump);
        }
    }

    #[test]
    fn nginx_dump_splitting_gives_back_its_files(
        files in vec(
            (
                "/[a-z]{1,8}(/[a-z.]{1,8}){0,2}",
                vec("[a-z_ ;{}#:/0-9.]{0,24}", 0..6),
            ),
            1..4,
        ),
    ) {
        // `nginx -T` shape: a header per file, its lines, then a line feed of nginx's own.
        let mut dump = String::from("nginx: the configuration file /x syntax is ok\n");
        let mut want = Dump::default();
        for (path, lines) in &files {
            let text: String = lines.iter().flat_map(|l| [l.as_str(), "\n"]).collect();
            let _ = writeln!(dump, "# configuration file {path}:\n{text}");
            want.files.push(crate::check::nginx::ConfFile { path: path.clone(), text });
        }
        // A body line that happens to look like a header would start a file: not this property.
        prop_assume!(files.iter().all(|(_, ls)| ls.iter().all(|l| !l.starts_with("# configuration file "))));
        prop_assert_eq!(parse_dump(&dump).expect("a dump"), want);
    }
}
