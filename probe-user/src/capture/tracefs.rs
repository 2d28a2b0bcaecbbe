//! tracefs: mounting it when needed and reading tracepoint field offsets from `format` files.
//! Rust eBPF has no CO-RE, so these offsets are passed to the programs as load-time globals.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Errors finding or reading tracefs.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing` or enable CONFIG_TRACING"
    )]
    Mount(std::io::Error),
    #[error(
        "tracepoint {0} does not exist on this kernel ({1}); it needs CONFIG_FTRACE_SYSCALLS / tracepoint support"
    )]
    Missing(String, std::io::Error),
    #[error("tracepoint {0} has no field `{1}` on this kernel")]
    Field(String, String),
}

/// The tracefs mount point, mounting it if nothing is there yet.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    log::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// Field offsets of one tracepoint record.
#[derive(Debug, Clone, Default)]
pub struct Format {
    name: String,
    fields: HashMap<String, u32>,
    /// The `{ value, "NAME" }` pairs of the print format's `__print_symbolic` tables (enum
    /// values such as `skb_drop_reason`, which differ between kernels).
    symbols: HashMap<String, u64>,
}

impl Format {
    /// Reads `events/<category>/<name>/format`.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TracefsError::Missing(format!("{category}:{name}"), e))?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    /// Parses the text of a `format` file: lines like
    /// `field:__u16 sport; offset:24; size:2; signed:0;` (tab-separated).
    #[must_use]
    pub fn parse(name: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = "";
            let mut offset = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.trim().parse::<u32>().ok();
                } else if decl.is_empty() {
                    decl = part;
                }
            }
            // The field name is the last word of the declaration, without any array suffix.
            let Some(last) = decl.split_whitespace().last() else {
                continue;
            };
            let field = last
                .split('[')
                .next()
                .unwrap_or(last)
                .trim_start_matches('*');
            if let Some(off) = offset {
                fields.insert(field.to_owned(), off);
            }
        }
        Self {
            name: name.to_owned(),
            fields,
            symbols: parse_symbols(text),
        }
    }

    /// The value a `__print_symbolic` table of the print format gives `symbol`, if any.
    #[must_use]
    pub fn symbol(&self, symbol: &str) -> Option<u64> {
        self.symbols.get(symbol).copied()
    }

    /// Offset of a field that must exist.
    pub fn offset(&self, field: &str) -> Result<u32, TracefsError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| TracefsError::Field(self.name.clone(), field.to_owned()))
    }

    /// Offset of a field that some kernels lack (`u32::MAX` when absent).
    #[must_use]
    pub fn optional(&self, field: &str) -> u32 {
        self.fields.get(field).copied().unwrap_or(u32::MAX)
    }
}

/// `{ 12, "NETFILTER_DROP" }` pairs of the `print fmt:` line (hex or decimal values).
fn parse_symbols(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Some(fmt) = text.lines().find(|l| l.starts_with("print fmt:")) else {
        return out;
    };
    for chunk in fmt.split('{').skip(1) {
        let Some((pair, _)) = chunk.split_once('}') else {
            continue;
        };
        let Some((value, name)) = pair.split_once(',') else {
            continue;
        };
        let value = value.trim();
        let value = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse::<u64>().ok(),
        };
        let name = name.trim().trim_matches('"');
        if let Some(v) = value
            && !name.is_empty()
        {
            out.insert(name.to_owned(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_format_file() {
        let text = include_str!("../../../tests/fixtures/inet_sock_set_state.format");
        let f = Format::parse("sock:inet_sock_set_state", text);
        assert_eq!(f.offset("skaddr").unwrap(), 8);
        assert_eq!(f.offset("newstate").unwrap(), 20);
        assert_eq!(f.offset("dport").unwrap(), 26);
        assert_eq!(f.offset("daddr_v6").unwrap(), 56);
        assert_eq!(f.offset("common_pid").unwrap(), 4);
        assert!(f.offset("nope").is_err());
        assert_eq!(f.optional("nope"), u32::MAX);
    }

    #[test]
    fn reads_drop_reasons_from_the_print_format() {
        let text = include_str!("../../../tests/fixtures/kfree_skb.format");
        let f = Format::parse("skb:kfree_skb", text);
        assert_eq!(f.offset("reason").unwrap(), 36);
        assert_eq!(f.symbol("NETFILTER_DROP"), Some(12));
        assert_eq!(f.symbol("NO_SOCKET"), Some(3));
        assert_eq!(f.symbol("NOT_A_REASON"), None);
        // A format without a symbol table has no symbols, and garbage does not panic.
        assert_eq!(
            Format::parse("x", "print fmt: \"%d\", { zz, }").symbol("zz"),
            None
        );
    }
}
