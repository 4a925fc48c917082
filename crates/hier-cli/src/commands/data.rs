use std::path::PathBuf;

use crate::enwik8::{prepare, ENWIK8, URL};
use anyhow::Result;
use clap::Subcommand;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    dataset: Dataset,
}

#[derive(Subcommand)]
enum Dataset {
    /// Download enwik8 from the Hutter Prize page, verify and unpack it (resumable). Train on it
    /// with `hier train --data DIR` (90M train / 5M valid / 5M test).
    Enwik8 {
        /// Where to put enwik8.zip and enwik8.
        #[arg(long, default_value = "data/enwik8")]
        dir: PathBuf,
        /// Download from another mirror.
        #[arg(long, default_value = URL)]
        url: String,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.dataset {
        Dataset::Enwik8 { dir, url } => {
            let progress = hier_train::progress::Progress::new(0, ENWIK8.zip_len, 1);
            let mut last = 0;
            let file = prepare(&dir, &url, &ENWIK8, |done, total| {
                // a line per 5% when not on a terminal
                if done * 20 / total != last * 20 / total || done == total {
                    progress.step(done, "bytes");
                }
                last = done;
            })?;
            progress.finish();
            eprintln!("enwik8 is ready at {} (verified); train with: hier train --preset enwik8 --data {}", file.display(), dir.display());
            Ok(())
        }
    }
}
