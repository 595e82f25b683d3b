//! [`SnapshotFile`]: the snapshot data openraft moves, a file on disk. Its own module so
//! that [`super::types`] (which names it in the type configuration) and
//! [`super::state_machine`] (which writes and reads it) both import it downward.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A snapshot file, read by openraft when it sends the snapshot and written when it
/// receives one; it knows its path so that an install can read it by name.
#[derive(Debug)]
pub struct SnapshotFile {
    pub(crate) file: tokio::fs::File,
    pub(crate) path: PathBuf,
}

impl SnapshotFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}
