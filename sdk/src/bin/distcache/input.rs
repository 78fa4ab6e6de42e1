//! Where the REPL's lines come from: on a terminal, a line editor
//! (rustyline: arrow keys, Ctrl-R search, history kept in a file between
//! sessions, as redis-cli keeps `~/.rediscli_history`); otherwise plain
//! lines from standard input with no prompt, so scripts can pipe commands in
//! and read only answers.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::error::ReadlineError;

/// The prompt on a terminal.
const PROMPT: &str = "distcache> ";

/// Most lines the history keeps.
const HISTORY_LINES: usize = 1000;

/// The REPL's input.
pub(crate) enum Input {
    /// A terminal: edited lines, and the file history is saved to.
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    /// A pipe or a file.
    Plain(std::io::Lines<std::io::StdinLock<'static>>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Editor { history, .. } => {
                f.debug_struct("Editor").field("history", history).finish()
            }
            Input::Plain(_) => f.write_str("Plain"),
        }
    }
}

impl Input {
    /// The line editor when standard input is a terminal (loading
    /// `history`, if given and present), else plain lines (also if the
    /// editor cannot start; on a terminal it cannot drive, such as
    /// `TERM=dumb`, rustyline itself reads plain lines after the prompt).
    pub(crate) fn open(history: Option<PathBuf>) -> Self {
        if std::io::stdin().is_terminal() {
            let config = rustyline::Config::builder()
                .max_history_size(HISTORY_LINES)
                .and_then(|c| c.history_ignore_dups(true))
                .map(|c| c.history_ignore_space(true).build());
            if let Ok(mut editor) = config.and_then(rustyline::DefaultEditor::with_config) {
                if let Some(path) = &history {
                    // Absent on first use; unreadable is not worth stopping for.
                    let _ = editor.load_history(path);
                }
                return Input::Editor {
                    editor: Box::new(editor),
                    history,
                };
            }
        }
        Input::Plain(std::io::stdin().lock().lines())
    }

    /// The next line, `None` at the end of input (Ctrl-D on a terminal).
    /// Ctrl-C drops the line being typed and asks again, as a shell does.
    /// It blocks, so it runs with tokio's leave to block this worker.
    pub(crate) fn next_line(&mut self) -> Option<std::io::Result<String>> {
        tokio::task::block_in_place(|| match self {
            Input::Editor { editor, .. } => loop {
                match editor.readline(PROMPT) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Some(Ok(line));
                    }
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return None,
                    Err(ReadlineError::Io(e)) => return Some(Err(e)),
                    Err(e) => return Some(Err(std::io::Error::other(e))),
                }
            },
            Input::Plain(lines) => lines.next(),
        })
    }

    /// Saves the history (0600) when there is a file for it.
    pub(crate) fn close(self) {
        if let Input::Editor {
            mut editor,
            history: Some(path),
        } = self
            && let Err(e) = editor.save_history(&path)
        {
            let _ = writeln!(
                std::io::stderr(),
                "distcache: history not saved to {}: {e}",
                path.display()
            );
        }
    }
}
