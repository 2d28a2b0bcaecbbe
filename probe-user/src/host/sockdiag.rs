//! TCP listening sockets from the kernel's `sock_diag` netlink interface, filtered to LISTEN in
//! the kernel. `/proc/net/tcp` lists every socket (a busy proxy host has 10^4-10^5 in `TIME_WAIT`)
//! and formats each as text: reading it was most of gwtrace's CPU; this asks only for listeners.

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;

/// One TCP listener: `addr:port` as gwtrace prints targets, its socket inode, and its accept
/// queue (current length, limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpListener {
    pub target: String,
    pub inode: u64,
    pub queue: u32,
    pub backlog: u32,
}

/// All TCP listeners of `family` (`AF_INET` or `AF_INET6`), or an error if netlink is unusable.
pub fn tcp_listeners(family: u8) -> std::io::Result<Vec<TcpListener>> {
    // SAFETY: plain socket(2) call; the fd is owned and closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // nlmsghdr (16) + inet_diag_req_v2 (56).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = family;
    req[17] = 6; // IPPROTO_TCP
    req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: sends our own buffer of the stated length.
    let sent = unsafe { libc::send(raw, req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receives into our own buffer, bounded by its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            return Err(std::io::Error::last_os_error());
        };
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0;
        while off + 16 <= n {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Ok(out);
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => return Err(std::io::Error::other("sock_diag refused the request")),
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(l) = parse_msg(&buf[off + 16..off + len]) {
                        out.push(l);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// Parses one `inet_diag_msg`.
fn parse_msg(m: &[u8]) -> Option<TcpListener> {
    let u32_at = |o: usize| {
        m.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let family = *m.first()?;
    let port = u16::from_be_bytes([*m.get(4)?, *m.get(5)?]);
    let src = m.get(8..24)?;
    let target = if family == 2 {
        format!(
            "{}:{port}",
            std::net::Ipv4Addr::new(src[0], src[1], src[2], src[3])
        )
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(src);
        format!("[{}]:{port}", std::net::Ipv6Addr::from(a))
    };
    Some(TcpListener {
        target,
        queue: u32_at(56)?,
        backlog: u32_at(60)?,
        inode: u64::from(u32_at(68)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listener_it_opened() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = tcp_listeners(2).unwrap();
        assert!(
            found
                .iter()
                .any(|x| x.target == format!("127.0.0.1:{port}") && x.inode > 0),
            "{found:?}"
        );
        assert!(found.iter().all(|x| !x.target.is_empty()));
    }

    #[test]
    fn short_messages_do_not_panic() {
        assert!(parse_msg(&[2, 10, 0]).is_none());
        assert!(parse_msg(&[]).is_none());
    }
}
