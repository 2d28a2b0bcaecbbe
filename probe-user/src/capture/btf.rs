//! Kernel structure member offsets from BTF (/sys/kernel/btf/vmlinux), for the few fields the
//! classic tracepoints do not carry: `task_struct.exit_code` and `sock.sk_err`.
//!
//! A single pass over the type section, without building a full type graph: general BTF
//! libraries parse every type of vmlinux up front (~0.4 s here), which was most of gwtrace's
//! attach time; this finds two members in a few milliseconds.

/// Errors reading offsets from BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at /sys/kernel/btf/vmlinux ({0}); gwtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    Read(String),
    #[error("kernel BTF has no member `{1}` in struct {0}")]
    Member(String, String),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// One type of the type section: where its record starts, its kind, name and member count.
#[derive(Clone, Copy)]
struct TypeRec {
    off: usize,
    kind: u32,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
}

/// Raw kernel BTF with an index of its types.
pub struct KernelBtf {
    data: Vec<u8>,
    strs_start: usize,
    strs_len: usize,
    /// Index `i` is type id `i + 1`.
    types: Vec<TypeRec>,
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl KernelBtf {
    /// Loads the running kernel's BTF.
    pub fn load() -> Result<Self, BtfError> {
        let data =
            std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| BtfError::Read(e.to_string()))?;
        Self::parse(data).ok_or_else(|| BtfError::Read("malformed BTF".into()))
    }

    /// Parses raw BTF bytes (little endian, as on `x86_64`).
    #[must_use]
    pub fn parse(data: Vec<u8>) -> Option<Self> {
        let magic = u16::from_le_bytes([*data.first()?, *data.get(1)?]);
        if magic != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strs_start = hdr_len + str_off;
        if types_end > data.len() || strs_start + str_len > data.len() {
            return None;
        }
        let mut types = Vec::new();
        let mut off = types_start;
        while off + 12 <= types_end {
            let name_off = u32_at(&data, off)?;
            let info = u32_at(&data, off + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            types.push(TypeRec {
                off,
                kind,
                name_off,
                vlen,
                kind_flag: info >> 31 == 1,
            });
            // Size of the kind-specific data after the 12-byte common header.
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                _ => 0,
            };
            off += 12 + extra;
        }
        Some(Self {
            data,
            strs_start,
            strs_len: str_len,
            types,
        })
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.strs_start + name_off as usize;
        let end = self.strs_start + self.strs_len;
        let s = self.data.get(start..end).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .filter(|t| {
                t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name.as_bytes()
            })
            .find_map(|t| self.find(t, member.as_bytes(), 0, 0))
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::Member(name.to_owned(), member.to_owned()))
    }

    /// Byte offset of `inner` in the struct that member `outer` of `struct name` is (an
    /// anonymous struct type such as `inet_connection_sock.icsk_ack`), from the start of `name`.
    pub fn nested_offset(&self, name: &str, outer: &str, inner: &str) -> Result<u32, BtfError> {
        let err = || BtfError::Member(name.to_owned(), format!("{outer}.{inner}"));
        let (outer_bits, type_id) = self
            .types
            .iter()
            .filter(|t| {
                t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name.as_bytes()
            })
            .find_map(|t| self.find_typed(t, outer.as_bytes(), 0, 0))
            .ok_or_else(err)?;
        let agg = self.resolve_aggregate(type_id).ok_or_else(err)?;
        let inner_bits = self.find(&agg, inner.as_bytes(), 0, 0).ok_or_else(err)?;
        Ok((outer_bits + inner_bits) / 8)
    }

    fn find(&self, t: &TypeRec, member: &[u8], base_bits: u32, depth: u32) -> Option<u32> {
        self.find_typed(t, member, base_bits, depth)
            .map(|(bits, _)| bits)
    }

    /// [`Self::find`], with the member's type id.
    fn find_typed(
        &self,
        t: &TypeRec,
        member: &[u8],
        base_bits: u32,
        depth: u32,
    ) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for i in 0..t.vlen {
            let m = t.off + 12 + i * 12;
            let m_name = u32_at(&self.data, m)?;
            let m_type = u32_at(&self.data, m + 4)?;
            let raw = u32_at(&self.data, m + 8)?;
            let bits = base_bits + if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            let name = self.name(m_name);
            if name == member {
                return Some((bits, m_type));
            }
            if name.is_empty()
                && let Some(inner) = self.resolve_aggregate(m_type)
                && let Some(found) = self.find_typed(&inner, member, bits, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }

    /// The struct/union a type id names, through typedefs and qualifiers.
    fn resolve_aggregate(&self, mut id: u32) -> Option<TypeRec> {
        for _ in 0..16 {
            let t = *self.types.get((id as usize).checked_sub(1)?)?;
            match t.kind {
                KIND_STRUCT | KIND_UNION => return Some(t),
                // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG point at another type.
                8..=11 | 18 => id = u32_at(&self.data, t.off + 8)?,
                _ => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(KernelBtf::parse(vec![]).is_none());
        assert!(
            KernelBtf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_none()
        );
    }

    #[test]
    fn finds_members_in_the_running_kernel() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: skipped");
            return;
        };
        // exit_code sits well inside task_struct; sk_err inside struct sock.
        let exit_code = btf.member_offset("task_struct", "exit_code").unwrap();
        assert!(exit_code > 100, "{exit_code}");
        let sk_err = btf.member_offset("sock", "sk_err").unwrap();
        assert!(sk_err > 0);
        // A member of an anonymous union inside struct sock_common (via __sk_common).
        assert!(btf.member_offset("sock_common", "skc_daddr").is_ok());
        assert!(btf.member_offset("sock", "no_such_member").is_err());
        // A member of a named member's anonymous struct: icsk_ack.lrcvtime, after the sock.
        let lrcvtime = btf
            .nested_offset("inet_connection_sock", "icsk_ack", "lrcvtime")
            .unwrap();
        assert!(lrcvtime > sk_err, "{lrcvtime}");
        assert!(
            btf.nested_offset("inet_connection_sock", "icsk_ack", "nope")
                .is_err()
        );
    }
}
