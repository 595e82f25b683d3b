//! An external sort of text lines, so a walk over a billion objects can bring a second key
//! order into the first without holding either in memory.
//!
//! Lines are gathered up to a byte budget, sorted and written to a temporary file (a *run*);
//! at the end the runs are merged with a heap, reading one line of each at a time. When there
//! are more runs than [`MAX_FAN_IN`] (more than that many files would be open at once), the
//! oldest are first merged into bigger runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, BufWriter, Lines, Write as _};
use std::path::PathBuf;

/// Runs merged at once: well under the usual limit of 1024 open files.
pub const MAX_FAN_IN: usize = 128;

/// Lines being sorted.
pub struct Spill {
    dir: tempfile::TempDir,
    runs: Vec<PathBuf>,
    buffer: Vec<String>,
    buffered: usize,
    budget: usize,
    written: u64,
}

impl Spill {
    /// Sorts in runs of about `budget` bytes of lines, in a new temporary directory.
    pub fn new(budget: usize) -> io::Result<Spill> {
        Ok(Spill {
            dir: tempfile::Builder::new().prefix("cairn-spill-").tempdir()?,
            runs: Vec::new(),
            buffer: Vec::new(),
            buffered: 0,
            budget: budget.max(1),
            written: 0,
        })
    }

    /// Adds a line (without its newline; it must not contain one).
    pub fn push(&mut self, line: String) -> io::Result<()> {
        debug_assert!(!line.contains('\n'));
        self.buffered += line.len() + std::mem::size_of::<String>();
        self.buffer.push(line);
        if self.buffered >= self.budget {
            self.flush()?;
        }
        Ok(())
    }

    /// Bytes of runs written to disk so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.written
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer.sort_unstable();
        let lines = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        let path = self.new_run_path();
        let mut out = BufWriter::new(File::create(&path)?);
        for line in &lines {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            self.written += line.len() as u64 + 1;
        }
        out.flush()?;
        self.runs.push(path);
        Ok(())
    }

    fn new_run_path(&self) -> PathBuf {
        self.dir.path().join(format!("run-{}", self.runs.len()))
    }

    /// Every line pushed, in sorted (bytewise) order, duplicates kept.
    pub fn finish(mut self) -> io::Result<Merged> {
        self.flush()?;
        let mut generation = 0usize;
        while self.runs.len() > MAX_FAN_IN {
            // Merge the first runs into one; it joins the end of the list.
            let group: Vec<PathBuf> = self.runs.drain(..MAX_FAN_IN).collect();
            generation += 1;
            let path = self.dir.path().join(format!("merged-{generation}"));
            let mut out = BufWriter::new(File::create(&path)?);
            for line in Merged::open(&group, None)? {
                out.write_all(line?.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            for old in group {
                std::fs::remove_file(old)?;
            }
            self.runs.push(path);
        }
        let runs = std::mem::take(&mut self.runs);
        Merged::open(&runs, Some(self.dir))
    }
}

/// The sorted lines of several runs.
pub struct Merged {
    readers: Vec<Lines<BufReader<File>>>,
    heap: BinaryHeap<Reverse<(String, usize)>>,
    failed: bool,
    // Kept until the merge is dropped: removing it deletes the runs.
    _dir: Option<tempfile::TempDir>,
}

impl Merged {
    fn open(runs: &[PathBuf], dir: Option<tempfile::TempDir>) -> io::Result<Merged> {
        let mut readers = Vec::with_capacity(runs.len());
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (index, path) in runs.iter().enumerate() {
            let mut lines = BufReader::new(File::open(path)?).lines();
            if let Some(line) = lines.next() {
                heap.push(Reverse((line?, index)));
            }
            readers.push(lines);
        }
        Ok(Merged {
            readers,
            heap,
            failed: false,
            _dir: dir,
        })
    }
}

impl Iterator for Merged {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let Reverse((line, index)) = self.heap.pop()?;
        match self.readers.get_mut(index).and_then(Iterator::next) {
            Some(Ok(next)) => self.heap.push(Reverse((next, index))),
            Some(Err(err)) => {
                self.failed = true;
                return Some(Err(err));
            }
            None => {}
        }
        Some(Ok(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_across_many_runs_and_cascades() {
        // A tiny budget gives one run per few lines, more than MAX_FAN_IN of them.
        let mut spill = Spill::new(200).unwrap();
        let mut expected = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let line = format!("nar/{:016x}\t{}", x >> 11, x % 7);
            expected.push(line.clone());
            spill.push(line).unwrap();
        }
        // Duplicates stay.
        spill.push(expected[0].clone()).unwrap();
        expected.push(expected[0].clone());
        assert!(spill.spilled_bytes() > 0);
        let got: Vec<String> = spill.finish().unwrap().map(Result::unwrap).collect();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn empty_and_in_memory() {
        let spill = Spill::new(1 << 20).unwrap();
        assert_eq!(spill.finish().unwrap().count(), 0);
        let mut spill = Spill::new(1 << 20).unwrap();
        for line in ["b", "a", "c"] {
            spill.push(line.into()).unwrap();
        }
        let got: Vec<String> = spill.finish().unwrap().map(Result::unwrap).collect();
        assert_eq!(got, ["a", "b", "c"]);
    }
}
