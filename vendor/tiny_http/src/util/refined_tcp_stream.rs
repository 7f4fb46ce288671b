// PATCH (tollgate): TLS support removed (tollgate is served plain behind a
// reverse proxy for TLS); the read/write halves are made with a fallible
// clone, because `try_clone().unwrap()` panicked the accept thread when the
// process ran out of file descriptors (see PATCHES.md).
use std::io::Result as IoResult;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use crate::connection::Connection;

pub struct RefinedTcpStream {
    stream: Connection,
    close_read: bool,
    close_write: bool,
}

impl RefinedTcpStream {
    /// The read half and the write half of one socket. Fails (instead of
    /// panicking) when the descriptor cannot be duplicated.
    pub(crate) fn new(stream: Connection) -> IoResult<(RefinedTcpStream, RefinedTcpStream)> {
        let read = stream.try_clone()?;
        let read = RefinedTcpStream { stream: read, close_read: true, close_write: false };
        let write = RefinedTcpStream { stream, close_read: false, close_write: true };
        Ok((read, write))
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> IoResult<()> {
        self.stream.set_read_timeout(t)
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> IoResult<()> {
        self.stream.shutdown(how)
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.stream.read(buf)
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream.flush()
    }
}
