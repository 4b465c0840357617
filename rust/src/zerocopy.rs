//! Zero-copy transfer of a file range to a socket: sendfile(2) on Linux, with a copying
//! fallback on other Unix systems. Non-blocking and resumable: returns the bytes sent; on
//! `WouldBlock` the caller waits for writability and calls again with the advanced offset.

use std::fs::File;
use std::io;

/// Sends up to `count` bytes of `file` from `offset` to the socket `out_fd`.
/// Returns the number of bytes sent (0 only at end of file).
#[cfg(unix)]
pub fn send_file(out_fd: i32, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    send_fd(out_fd, file.as_raw_fd(), offset, count)
}

/// As `send_file`, for a raw file descriptor owned by the caller.
#[cfg(target_os = "linux")]
pub fn send_fd(out_fd: i32, in_fd: i32, offset: u64, count: usize) -> io::Result<usize> {
    let mut off: libc::off_t = offset
        .try_into()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: sendfile only reads `in_fd` and writes `out_fd`, both plain integers that the
        // kernel validates (a bad descriptor yields EBADF, never memory unsafety); `off` is a
        // live, exclusively borrowed off_t for the duration of the call.
        let n = unsafe { libc::sendfile(out_fd, in_fd, &mut off, count) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Copying fallback where sendfile(2) is missing or has another signature: pread + write.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn send_fd(out_fd: i32, in_fd: i32, offset: u64, count: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; count.min(1 << 20)];
    let off: libc::off_t = offset
        .try_into()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let n = loop {
        // SAFETY: `buf` is a live, writable allocation of `buf.len()` bytes owned by this frame.
        let n = unsafe { libc::pread(in_fd, buf.as_mut_ptr().cast(), buf.len(), off) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    if n == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: `buf[..n]` was initialised by pread above and outlives the call.
        let w = unsafe { libc::write(out_fd, buf.as_ptr().cast(), n) };
        if w >= 0 {
            return Ok(w as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Without Unix descriptors the Python layer reads the range and sends it itself.
#[cfg(not(unix))]
pub fn send_file(_out_fd: i32, _file: &File, _offset: u64, _count: usize) -> io::Result<usize> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(not(unix))]
pub fn send_fd(_out_fd: i32, _in_fd: i32, _offset: u64, _count: usize) -> io::Result<usize> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::io::AsRawFd;

    #[test]
    fn sends_a_file_range_to_a_socket() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let n = send_file(a.as_raw_fd(), &f, 3, 4).unwrap();
        assert_eq!(n, 4);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"3456");
    }
}
