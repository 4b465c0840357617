//! Zero-copy transfer of a file range to a socket: sendfile(2) on Linux, with a copying
//! fallback elsewhere. Non-blocking and resumable: returns the bytes sent, and the caller waits
//! for writability and calls again with the advanced offset when it gets `WouldBlock`.

use std::fs::File;
use std::io;

/// Sends up to `count` bytes of `file` from `offset` to the socket `out_fd` without copying
/// them through user space. Returns the number of bytes sent (0 only at end of file).
#[cfg(target_os = "linux")]
pub fn send_file(out_fd: i32, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    let mut off: libc::off_t = offset.try_into().map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `file` is an open file borrowed for the duration of the call, `out_fd` is a
        // caller-supplied descriptor that the kernel validates (a bad one yields EBADF, not UB),
        // and `off` is a valid, exclusively borrowed off_t that the kernel updates.
        let n = unsafe { libc::sendfile(out_fd, file.as_raw_fd(), &mut off, count) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Copying fallback: reads the range and writes it to `out_fd`.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn send_file(out_fd: i32, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; count.min(1 << 20)];
    let n = crate::segment::read_at(file, &mut buf, offset)?;
    if n == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: `buf[..n]` is initialised memory owned by this frame; `out_fd` is validated by
        // the kernel.
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

/// No portable socket descriptor here: the Python layer reads the range and sends it itself.
#[cfg(not(unix))]
pub fn send_file(_out_fd: i32, _file: &File, _offset: u64, _count: usize) -> io::Result<usize> {
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
