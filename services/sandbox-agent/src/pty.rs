//! Pseudo-terminals: open a pair, size it, and start a process on it as its controlling terminal.
//!
//! Used by the agent inside sandboxes and by the executor's local backend, so a PTY behaves the
//! same on every backend: the process leads a new session whose controlling terminal is the PTY
//! (so `tty` works, job-control shells work and a resize delivers `SIGWINCH` to the foreground
//! process group), stdin, stdout and stderr are the terminal, and the caller keeps the master.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use crate::protocol::WindowSize;

/// The two ends of a new PTY.
pub struct PtyPair {
    /// The caller's end: read the terminal's output, write its input, resize it.
    pub master: OwnedFd,
    /// The process's end; becomes its stdin, stdout, stderr and controlling terminal.
    pub slave: OwnedFd,
}

/// Opens a PTY of `size`.
pub fn open(size: WindowSize) -> io::Result<PtyPair> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let path = std::ffi::OsStr::from_bytes(name.as_bytes());
    // std opens with O_CLOEXEC; O_NOCTTY keeps the terminal from becoming ours.
    let slave: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    resize(&master, size)?;
    Ok(PtyPair {
        master,
        slave: slave.into(),
    })
}

/// Sets the terminal size (the kernel sends `SIGWINCH` to the foreground process group).
pub fn resize(master: impl AsFd, size: WindowSize) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        master,
        Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// Makes `command` start on the terminal `slave`: the terminal is its stdin, stdout and stderr,
/// and the process leads a new session with the terminal as its controlling terminal (its pid
/// is then also its process group id).
pub fn attach(command: &mut Command, slave: &OwnedFd) -> io::Result<()> {
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: the hook runs in the child between fork and exec and only makes two system calls
    // (setsid, ioctl TIOCSCTTY on fd 0) through rustix, which neither allocates nor takes locks,
    // so it is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    Ok(())
}

/// A PTY master (a non-blocking duplicate) as an async reader and writer. End of file is the
/// terminal closing (every slave fd gone), which Linux reports as `EIO`.
pub struct AsyncPty(tokio::io::unix::AsyncFd<OwnedFd>);

impl AsyncPty {
    pub fn new(master: &OwnedFd) -> io::Result<Self> {
        let fd = master.try_clone()?;
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: `fd` is an `OwnedFd` that the `AsyncFd` owns from here on: it stays open, and
        // `as_raw_fd` keeps returning it, until the `AsyncFd` is dropped.
        #[allow(unsafe_code)]
        let registered = unsafe { tokio::io::unix::AsyncFd::register(fd) };
        Ok(Self(registered.map_err(io::Error::from)?))
    }
}

impl tokio::io::AsyncRead for AsyncPty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if is_closed(&e) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for AsyncPty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether a read error on the master means "the terminal was closed" (every slave fd is gone):
/// Linux reports that as `EIO`.
pub fn is_closed(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_process_on_a_pty_sees_a_terminal_of_the_right_size() {
        let pair = open(WindowSize {
            rows: 33,
            cols: 101,
        })
        .unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "tty >/dev/null && echo tty-ok; stty size"]);
        attach(&mut cmd, &pair.slave).unwrap();
        let mut child = cmd.spawn().unwrap();
        // Every copy of the slave must close for the master to report the end.
        drop(cmd);
        drop(pair.slave);
        let mut master = File::from(pair.master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if is_closed(&e) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(child.wait().unwrap().success());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("tty-ok"), "{text:?}");
        assert!(text.contains("33 101"), "{text:?}");
        // A terminal turns "\n" into "\r\n".
        assert!(text.contains("\r\n"), "{text:?}");
    }
}
