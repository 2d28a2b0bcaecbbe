//! Kernel structure member offsets from BTF (/sys/kernel/btf/vmlinux), for the few fields the
//! classic tracepoints do not carry: `task_struct.exit_code` and `sock.sk_err`.
use btf_rs::{Btf, Type};

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

/// Parsed kernel BTF.
pub struct KernelBtf(Btf);

impl KernelBtf {
    /// Loads the running kernel's BTF.
    pub fn load() -> Result<Self, BtfError> {
        Btf::from_file("/sys/kernel/btf/vmlinux")
            .map(Self)
            .map_err(|e| BtfError::Read(e.to_string()))
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let err = || BtfError::Member(name.to_owned(), member.to_owned());
        let types = self.0.resolve_types_by_name(name).map_err(|_| err())?;
        for ty in types {
            if let Type::Struct(s) = ty
                && let Some(bits) = self.find(&s, member, 0)
            {
                return Ok(bits / 8);
            }
        }
        Err(err())
    }

    fn find(&self, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
        for m in &s.members {
            let name = self.0.resolve_name(m).unwrap_or_default();
            let bits = base_bits + m.bit_offset();
            if name == member {
                return Some(bits);
            }
            if name.is_empty()
                && let Ok(Type::Struct(inner) | Type::Union(inner)) = self.0.resolve_chained_type(m)
                && let Some(found) = self.find(&inner, member, bits)
            {
                return Some(found);
            }
        }
        None
    }
}
