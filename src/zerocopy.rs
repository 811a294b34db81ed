//! Bodies the kernel sends without copying them, as nginx sends static files.
//!
//! At 1k keys a gzip scrape is ~275 KB and a busy scraper fetches thousands a
//! second; `perf` then showed 59% of the exporter's CPU in the kernel copying
//! those bytes from user memory into socket buffers. So a published body is
//! written once into a memfd and mapped read-only ([`shared_bytes`]); the
//! plain-TCP stream ([`ZeroCopyStream`]) recognises any slice of such a mapping
//! among the buffers hyper asks it to write and hands it to `sendfile(2)`,
//! which queues the file's pages by reference.
//!
//! Nothing else changes: the `Bytes` read like any other, TLS connections (which
//! must encrypt every byte) and other platforms take the ordinary copying path,
//! and a body that cannot be placed in a memfd stays on the heap.

use bytes::Bytes;

/// Bodies larger than this stay on the heap: moving them into a memfd would
/// hold a second copy for a moment, and peak memory at 100k keys (a ~30 MB gzip
/// body) matters more than the copy per scrape at a few scrapes per second.
pub const MAX_SHARED_BODY: usize = 16 << 20;

/// `data` as `Bytes` backed by a read-only memfd mapping, so that
/// [`ZeroCopyStream`] can send it with `sendfile(2)`; on heap memory when
/// `data` is empty or larger than [`MAX_SHARED_BODY`], the platform has no
/// memfd, or creating one fails (e.g. out of file descriptors).
pub fn shared_bytes(data: Vec<u8>) -> Bytes {
    if data.is_empty() || data.len() > MAX_SHARED_BODY {
        return Bytes::from(data);
    }
    #[cfg(target_os = "linux")]
    match linux::MappedBody::new(&data) {
        Ok(mapped) => return Bytes::from_owner(mapped),
        Err(e) => tracing::debug!(error = %e, "body kept on the heap: memfd unavailable"),
    }
    Bytes::from(data)
}

/// Whether `bytes` lie in a memfd mapping made by [`shared_bytes`].
pub fn is_shared(bytes: &[u8]) -> bool {
    #[cfg(target_os = "linux")]
    {
        linux::locate(bytes).is_some()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        false
    }
}

#[cfg(target_os = "linux")]
pub use linux::ZeroCopyStream;

/// Elsewhere the stream is the plain `TcpStream`.
#[cfg(not(target_os = "linux"))]
pub type ZeroCopyStream = tokio::net::TcpStream;

/// A plain-HTTP connection ready for [`shared_bytes`] bodies.
pub fn stream(tcp: tokio::net::TcpStream) -> ZeroCopyStream {
    #[cfg(target_os = "linux")]
    {
        ZeroCopyStream::new(tcp)
    }
    #[cfg(not(target_os = "linux"))]
    {
        tcp
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io::{self, IoSlice, Write};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::pin::Pin;
    use std::ptr::NonNull;
    use std::sync::RwLock;
    use std::task::{ready, Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
    use tokio::net::TcpStream;

    /// Live mappings: start address, length, memfd. An entry is removed before
    /// its mapping is unmapped, and a slice of a mapping keeps the mapping alive,
    /// so a slice found here can use the fd for as long as the slice is borrowed.
    static REGIONS: RwLock<Vec<(usize, usize, RawFd)>> = RwLock::new(Vec::new());

    /// A memfd holding a body, and a read-only shared mapping of it.
    pub struct MappedBody {
        ptr: NonNull<u8>,
        len: usize,
        /// The memfd, open for as long as the mapping: `REGIONS` hands out its fd.
        _file: File,
    }

    // SAFETY: the mapping is read-only and never written after creation; the
    // memfd is private to this process and written only before it is mapped.
    unsafe impl Send for MappedBody {}
    unsafe impl Sync for MappedBody {}

    impl MappedBody {
        pub fn new(data: &[u8]) -> io::Result<Self> {
            // SAFETY: a valid NUL-terminated name and flags; the result is checked.
            let fd =
                unsafe { libc::memfd_create(c"openrouter-metrics".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor owned by nothing else.
            let mut file = unsafe { File::from_raw_fd(fd) };
            file.write_all(data)?;
            // SAFETY: maps `data.len()` (> 0) bytes of a file of that length,
            // read-only and shared; the result is checked.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    data.len(),
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let ptr = NonNull::new(ptr.cast::<u8>())
                .ok_or_else(|| io::Error::other("mmap returned null"))?;
            regions_write().push((ptr.as_ptr() as usize, data.len(), file.as_raw_fd()));
            Ok(MappedBody {
                ptr,
                len: data.len(),
                _file: file,
            })
        }
    }

    impl AsRef<[u8]> for MappedBody {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: a live read-only mapping of `len` bytes, unmapped only in drop.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for MappedBody {
        fn drop(&mut self) {
            let start = self.ptr.as_ptr() as usize;
            regions_write().retain(|&(s, _, _)| s != start);
            // SAFETY: unmaps exactly the mapping made in `new`; no slice of it
            // outlives `self` (Bytes drops its owner after its last clone).
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
            // The memfd closes with `_file` after this; pages still queued on
            // sockets stay referenced by the kernel until sent.
        }
    }

    fn regions_write() -> std::sync::RwLockWriteGuard<'static, Vec<(usize, usize, RawFd)>> {
        REGIONS
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The memfd and offset of `bytes` when they lie wholly in one mapping.
    pub fn locate(bytes: &[u8]) -> Option<(RawFd, usize)> {
        if bytes.is_empty() {
            return None;
        }
        let start = bytes.as_ptr() as usize;
        let regions = REGIONS
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        regions.iter().find_map(|&(s, len, fd)| {
            let offset = start.checked_sub(s)?;
            (offset + bytes.len() <= len).then_some((fd, offset))
        })
    }

    /// A plain TCP connection whose writes send memfd-backed slices with
    /// `sendfile(2)` and everything else as a normal (vectored) write.
    #[derive(Debug)]
    pub struct ZeroCopyStream {
        inner: TcpStream,
        /// Cleared (for this connection) if the kernel refuses sendfile.
        sendfile_works: bool,
    }

    impl ZeroCopyStream {
        pub fn new(inner: TcpStream) -> Self {
            ZeroCopyStream {
                inner,
                sendfile_works: true,
            }
        }

        /// Runs a raw non-blocking send on the socket once it is writable.
        fn poll_send(
            &self,
            cx: &mut Context<'_>,
            mut send: impl FnMut(RawFd) -> isize,
        ) -> Poll<io::Result<usize>> {
            let fd = self.inner.as_raw_fd();
            loop {
                ready!(self.inner.poll_write_ready(cx))?;
                let sent = self.inner.try_io(Interest::WRITABLE, || {
                    let n = send(fd);
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                });
                match sent {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    // try_io cleared the readiness; wait for the next edge.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }

        /// Sends `buf` by reference when it is a slice of a memfd mapping, else
        /// (or when the kernel refuses sendfile here) with an ordinary write.
        fn poll_write_slice(
            &mut self,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.sendfile_works {
                if let Some((fd, offset)) = locate(buf) {
                    // One call sends at most 1 GiB; the caller writes the rest later.
                    let count = buf.len().min(1 << 30);
                    let sent = ready!(self.poll_send(cx, |socket| {
                        let mut off = offset as libc::off_t;
                        // SAFETY: both descriptors are open (the memfd lives as long
                        // as the borrowed slice's mapping), and `off` is a local.
                        unsafe { libc::sendfile(socket, fd, &mut off, count) }
                    }));
                    match sent {
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                            ) =>
                        {
                            tracing::debug!(error = %e, "sendfile refused; copying bodies instead");
                            self.sendfile_works = false;
                        }
                        other => return Poll::Ready(other),
                    }
                }
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        /// Writes `bufs` (none of them memfd-backed) with MSG_MORE, so that the
        /// memfd data that follows can share their TCP segment.
        fn poll_send_more(
            &self,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.poll_send(cx, |socket| {
                // SAFETY: IoSlice is ABI-compatible with iovec, and the msghdr
                // points at `bufs`, which outlive the call.
                unsafe {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = bufs.len() as _;
                    libc::sendmsg(socket, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
                }
            })
        }
    }

    impl AsyncRead for ZeroCopyStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for ZeroCopyStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write_slice(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            // The first memfd-backed buffer splits the write: what precedes it is
            // written normally, it goes by sendfile, what follows waits for the
            // next call (a short write, which AsyncWrite allows).
            let first_shared = bufs.iter().position(|b| locate(b).is_some());
            let this = self.get_mut();
            match first_shared {
                None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
                Some(_) if !this.sendfile_works => {
                    Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
                }
                Some(i) if bufs[..i].iter().all(|b| b.is_empty()) => {
                    this.poll_write_slice(cx, &bufs[i])
                }
                Some(i) => this.poll_send_more(cx, &bufs[..i]),
            }
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn shared_bytes_read_back_and_are_recognised() {
        let data = sample(300_000);
        let bytes = shared_bytes(data.clone());
        assert_eq!(&bytes[..], &data[..]);
        if cfg!(target_os = "linux") {
            assert!(is_shared(&bytes));
            assert!(is_shared(&bytes.slice(1000..2000)));
        }
        // Heap memory, an empty body and an oversized one are not shared.
        assert!(!is_shared(&data));
        assert!(!is_shared(&shared_bytes(Vec::new())));
        assert!(!is_shared(&shared_bytes(vec![1; MAX_SHARED_BODY + 1])));
    }

    #[test]
    fn a_dropped_body_is_forgotten() {
        let bytes = shared_bytes(sample(4096));
        let (start, len) = (bytes.as_ptr() as usize, bytes.len());
        let slice = bytes.slice(10..20);
        drop(bytes);
        // A slice keeps the mapping alive.
        assert!(is_shared(&slice));
        drop(slice);
        // SAFETY: only the address is used, to look it up; nothing is read.
        let gone = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        assert!(!is_shared(gone));
    }

    /// Headers from the heap, then a shared body, then heap bytes again, written
    /// to a reader that drains slowly so that sendfile returns short counts and
    /// would-block: the reader must get exactly the concatenation.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn mixed_writes_arrive_in_order_through_a_slow_reader() {
        use std::io::IoSlice;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\n\r\n".to_vec();
        let body = shared_bytes(sample(MAX_SHARED_BODY / 3));
        assert!(is_shared(&body));
        let tail = b"trailing heap bytes".to_vec();
        let mut expected = head.clone();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(&tail);

        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() < 2_000_000 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            got
        });
        let mut stream = ZeroCopyStream::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let parts: [&[u8]; 3] = [&head, &body, &tail];
        let (mut part, mut offset) = (0, 0);
        let mut calls = 0;
        while part < parts.len() {
            let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&parts[part][offset..]))
                .chain(parts[part + 1..].iter().map(|p| IoSlice::new(p)))
                .collect();
            let mut n = stream.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            calls += 1;
            while n > 0 {
                let left = parts[part].len() - offset;
                if n >= left {
                    n -= left;
                    part += 1;
                    offset = 0;
                } else {
                    offset += n;
                    n = 0;
                }
            }
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        // The head and the body never go out in one call.
        assert!(calls >= 3, "{calls} write calls");
    }
}
