//! What a failed call says about itself: one line naming what happened (the plugin's own panic
//! message when it printed one, the kind of trap otherwise), never the wasm backtrace, which
//! goes to the log at debug level.

use wasmtime::Trap;

/// Most bytes of a reason taken from the guest's stderr; the rest is in the log.
const MAX_STDERR_REASON: usize = 512;

/// The one-line reason of a failed call; `stderr` is what the instance wrote to its stderr.
pub(crate) fn reason(plugin: &str, error: &wasmtime::Error, stderr: &str) -> String {
    tracing::debug!(plugin, error = format!("{error:?}"), "plugin call failed");
    let kind = match error.downcast_ref::<Trap>() {
        Some(trap) => describe(*trap),
        None => first_line(&error.root_cause().to_string()),
    };
    match guest_message(stderr) {
        Some(message) => format!("{message} [{kind}]"),
        None => kind,
    }
}

fn describe(trap: Trap) -> String {
    match trap {
        Trap::StackOverflow => {
            "stack overflow: the call nested too deep (unbounded recursion?)".into()
        }
        Trap::UnreachableCodeReached => "wasm `unreachable` reached: a panic or abort".into(),
        // A Rust or C guest's stack lives in linear memory and wraps below address 0 when it
        // overflows, so that is the usual cause.
        Trap::MemoryOutOfBounds => {
            "out-of-bounds memory access (in a Rust or C plugin usually a stack overflow of its \
             linear-memory stack)"
                .into()
        }
        Trap::HeapMisaligned => "misaligned memory access".into(),
        Trap::TableOutOfBounds => "out-of-bounds table access".into(),
        Trap::IndirectCallToNull => "call through a null function reference".into(),
        Trap::BadSignature => "indirect call with the wrong signature".into(),
        Trap::IntegerOverflow => "integer overflow".into(),
        Trap::IntegerDivisionByZero => "integer division by zero".into(),
        Trap::BadConversionToInteger => "invalid float-to-integer conversion".into(),
        Trap::AllocationTooLarge => "allocation too large".into(),
        other => first_line(&other.to_string()),
    }
}

/// The guest's own account: a Rust panic (`panicked at src/lib.rs:9:5:` then the message),
/// or else the last lines it printed (a Python traceback ends with the exception).
fn guest_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let message = match lines.iter().rposition(|l| l.contains("panicked at ")) {
        Some(at) => {
            let head = lines[at];
            let location = head
                .split_once("panicked at ")
                .map(|(_, loc)| loc.trim_end_matches(':'))
                .unwrap_or_default();
            // Since Rust 1.73 the message follows on its own lines, up to the `note:` hint.
            let text: Vec<&str> = lines[at + 1..]
                .iter()
                .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace"))
                .copied()
                .collect();
            match (text.is_empty(), location.is_empty()) {
                (true, _) => format!("panicked at {location}"),
                (false, true) => format!("panicked: {}", text.join(" ")),
                (false, false) => format!("panicked at {location}: {}", text.join(" ")),
            }
        }
        None if lines.is_empty() => return None,
        None => {
            let tail = &lines[lines.len().saturating_sub(3)..];
            tail.join(" | ")
        }
    };
    Some(cap(message))
}

fn first_line(text: &str) -> String {
    cap(text.lines().next().unwrap_or_default().to_string())
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_STDERR_REASON {
        let mut end = MAX_STDERR_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_is_its_message_and_place() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:15:17:\npoison event orders/2/1\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let e = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let r = reason("trapper", &e, stderr);
        assert_eq!(
            r,
            "panicked at src/lib.rs:15:17: poison event orders/2/1 [wasm `unreachable` reached: a panic or abort]"
        );
    }

    #[test]
    fn a_trap_without_output_names_its_kind_and_no_backtrace() {
        let e = wasmtime::Error::new(Trap::StackOverflow).context(
            "error while executing at wasm backtrace:\n    0: 0x1 - <unknown>!<wasm function 30>",
        );
        let r = reason("deep", &e, "");
        assert!(r.starts_with("stack overflow"), "{r}");
        assert!(!r.contains("wasm function"), "{r}");
    }

    #[test]
    fn other_output_keeps_its_last_lines_and_is_capped() {
        let stderr = "Traceback (most recent call last):\n  File \"app.py\", line 3\nValueError: bad amount\n";
        let e = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let r = reason("py", &e, stderr);
        assert!(r.contains("line 3 | ValueError: bad amount ["), "{r}");
        let long = "é".repeat(2000);
        let r = reason("py", &e, &long);
        assert!(r.len() < MAX_STDERR_REASON + 100, "{}", r.len());
    }
}
