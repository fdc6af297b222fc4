//! Progress for `wharf sync`: bars on a terminal (per image and bytes), plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress sink for one run.
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

/// Progress of one entry.
#[derive(Clone)]
pub struct EntryProgress {
    images: Option<ProgressBar>,
    bytes: Option<ProgressBar>,
    name: Arc<str>,
}

impl Progress {
    /// Bars when stderr is a terminal (and `enabled`), log lines otherwise.
    pub fn new(enabled: bool) -> Progress {
        let tty = enabled && std::io::stderr().is_terminal();
        Progress { bars: tty.then(MultiProgress::new) }
    }

    /// No output at all (background schedules log through tracing only).
    pub fn silent() -> Progress {
        Progress { bars: None }
    }

    /// Start an entry with `images` tags to process.
    pub fn entry(&self, name: &str, images: u64) -> EntryProgress {
        let Some(m) = &self.bars else {
            return EntryProgress { images: None, bytes: None, name: name.into() };
        };
        let img = m.add(ProgressBar::new(images));
        img.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} images {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        img.set_prefix(name.to_owned());
        let bytes = m.add(ProgressBar::new_spinner());
        bytes.set_style(
            ProgressStyle::with_template("  {spinner} {bytes} copied ({bytes_per_sec})").expect("valid template"),
        );
        EntryProgress { images: Some(img), bytes: Some(bytes), name: name.into() }
    }
}

impl EntryProgress {
    /// A tag finished with `action`.
    pub fn image_done(&self, tag: &str, action: &str) {
        match &self.images {
            Some(b) => {
                b.set_message(format!("{tag}: {action}"));
                b.inc(1);
            }
            None => tracing::info!(entry = %self.name, %tag, %action, "sync"),
        }
    }

    /// Bytes copied.
    pub fn bytes(&self, n: u64) {
        if let Some(b) = &self.bytes {
            b.inc(n);
        }
    }

    /// The entry is done.
    pub fn finish(&self) {
        if let Some(b) = &self.images {
            b.finish();
        }
        if let Some(b) = &self.bytes {
            b.finish();
        }
    }
}
