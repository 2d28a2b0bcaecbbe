//! Listening sockets from the kernel's `sock_diag` netlink interface, filtered to LISTEN in the
//! kernel: TCP listeners (`/proc/net/tcp` lists every socket, a busy proxy host has 10^4-10^5 in
//! `TIME_WAIT`, and formats each as text: reading it was most of gwtrace's CPU) and unix stream
//! listeners with their accept queues (which `/proc/net/unix` does not show).

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
    // inet_diag_req_v2 (56 bytes).
    let mut req = [0u8; 56];
    req[0] = family;
    req[1] = 6; // IPPROTO_TCP
    req[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    let mut out = Vec::new();
    dump(&req, |m| out.extend(parse_msg(m)))?;
    Ok(out)
}

/// A listening unix stream socket bound to a path (or an abstract name) and its accept queue:
/// a connect to it fails with EAGAIN (non-blocking) once `queue > backlog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixListenerQueue {
    /// `unix:/run/app.sock` or `unix:@name`.
    pub target: String,
    pub inode: u64,
    /// Connections waiting to be accepted, and the limit (`listen()`'s backlog, capped).
    pub queue: u32,
    pub backlog: u32,
}

const AF_UNIX: u8 = 1;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
const SOCK_STREAM: u8 = 1;

/// Every listening unix stream socket of gwtrace's network namespace, with its queue.
pub fn unix_listeners() -> std::io::Result<Vec<UnixListenerQueue>> {
    // unix_diag_req (24 bytes): family, protocol, pad, states, ino, show, cookie.
    let mut req = [0u8; 24];
    req[0] = AF_UNIX;
    req[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req[12..16].copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN).to_ne_bytes());
    let mut out = Vec::new();
    dump(&req, |m| out.extend(parse_unix_msg(m)))?;
    Ok(out)
}

/// Parses one `unix_diag_msg` and its attributes (name, queue lengths).
fn parse_unix_msg(m: &[u8]) -> Option<UnixListenerQueue> {
    let u32_at = |o: usize| {
        m.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    // unix_diag_msg: family, type, state, pad, ino, cookie[2] (16 bytes), then attributes.
    if *m.get(1)? != SOCK_STREAM {
        return None;
    }
    let inode = u64::from(u32_at(4)?);
    let (mut name, mut rq) = (None, None);
    let mut off = 16;
    while off + 4 <= m.len() {
        let len = usize::from(u16::from_ne_bytes([m[off], m[off + 1]]));
        let ty = u16::from_ne_bytes([m[off + 2], m[off + 3]]);
        if len < 4 || off + len > m.len() {
            break;
        }
        let body = &m[off + 4..off + len];
        match ty {
            UNIX_DIAG_NAME => {
                name = Some(if body.first() == Some(&0) {
                    format!("unix:@{}", String::from_utf8_lossy(&body[1..]))
                } else {
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    format!("unix:{}", String::from_utf8_lossy(&body[..end]))
                });
            }
            UNIX_DIAG_RQLEN if body.len() >= 8 => {
                let q = u32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                let b = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
                rq = Some((q, b));
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    let (queue, backlog) = rq?;
    Some(UnixListenerQueue {
        target: name?,
        inode,
        queue,
        backlog,
    })
}

/// Sends one `SOCK_DIAG_BY_FAMILY` dump request (`req`: the family's request struct) and hands
/// each answer's payload to `each`.
fn dump(req: &[u8], mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
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
    // nlmsghdr (16) + the request.
    let total = 16 + req.len();
    let mut msg = vec![0u8; total];
    msg[0..4].copy_from_slice(&u32::try_from(total).unwrap_or(0).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[16..].copy_from_slice(req);
    // SAFETY: sends our own buffer of the stated length.
    let sent = unsafe { libc::send(raw, msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receives into our own buffer, bounded by its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            return Err(std::io::Error::last_os_error());
        };
        if n == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off + 16 <= n {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Ok(());
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => return Err(std::io::Error::other("sock_diag refused the request")),
                SOCK_DIAG_BY_FAMILY => each(&buf[off + 16..off + len]),
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
    fn finds_a_unix_listener_and_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let target = format!("unix:{}", path.display());
        let found = unix_listeners().unwrap();
        let me = found.iter().find(|x| x.target == target);
        assert!(
            me.is_some_and(|x| x.queue == 1 && x.backlog > 0),
            "{me:?} in {} listeners",
            found.len()
        );
        drop(l);
        assert!(parse_unix_msg(&[1, 1, 10]).is_none());
    }

    #[test]
    fn short_messages_do_not_panic() {
        assert!(parse_msg(&[2, 10, 0]).is_none());
        assert!(parse_msg(&[]).is_none());
    }
}
