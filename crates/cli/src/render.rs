//! Text for humans: error lines, tables, ages, commands.

use std::time::{Duration, SystemTime};

/// An error chain as one line, `outer: inner: root`, starting in lower case like every
/// other `aegis:` line (unless it starts with an acronym such as "KVM").
pub fn error_line(e: &anyhow::Error) -> String {
    lowercase_first(&format!("{e:#}"))
}

/// An error and its sources, `outer: inner: root`.
pub use aegis_api::error_chain as chain;

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(s.chars().skip(1)).collect()
        }
        _ => s.to_string(),
    }
}

/// A clap error (several lines: message, usage, tips) as one line that names the `--help`
/// of `command` ("aegis run").
pub fn clap_error_line(rendered: &str, command: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // Continuation lines (e.g. the list of missing arguments) up to the first blank line.
    let details: Vec<&str> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if !details.is_empty() {
        message = format!("{} {}", message.trim_end(), details.join(", "));
    }
    format!("{message}; see `{command} --help`")
}

/// The (sub)command an argument list addresses, e.g. `aegis task logs`, found by walking
/// the command tree, skipping options and their values.
pub fn command_path(root: &clap::Command, args: &[String]) -> String {
    let mut path = vec![root.get_name().to_string()];
    let mut current = root;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && current
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .is_some_and(|a| a.get_action().takes_values());
            if takes_value {
                args.next();
            }
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        match current.find_subcommand(arg) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                current = sub;
            }
            None => break,
        }
    }
    path.join(" ")
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push('\n');
    }
    out
}

/// `key:   value` lines with the values aligned (the `inspect` views); no header.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![format!("{k}:"), v.clone()])
        .collect();
    table(&["", ""], &rows)
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

/// "12s ago", "5m ago", "3h ago", "2d ago"; the timestamp itself when it does not parse.
pub fn age(rfc3339: &str, now: SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A command line as a shell would need it typed, cut to `max` characters.
pub fn command_line(argv: &[String], max: usize) -> String {
    let line = argv
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        line
    }
}

fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "8m12s", "45s", "1.2s".
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs >= 10 {
        format!("{secs}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Words of `text` in lines of at most `width` characters (a longer word gets a line of its
/// own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_lower_case_line() {
        let e = anyhow::anyhow!("Permission denied").context("Cannot open /x");
        assert_eq!(error_line(&e), "cannot open /x: Permission denied");
        assert_eq!(lowercase_first("KVM is absent"), "KVM is absent");
        assert_eq!(lowercase_first("`aegis` x"), "`aegis` x");
    }

    #[test]
    fn clap_errors_become_one_line_naming_the_help() {
        let rendered = "error: invalid value '0' for '--memory <SIZE>': memory must be at \
            least 64 MiB\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered, "aegis run"),
            "invalid value '0' for '--memory <SIZE>': memory must be at least 64 MiB; see \
             `aegis run --help`"
        );
        let missing = "error: the following required arguments were not provided:\n  \
            <COMMAND>...\n\nUsage: aegis run <COMMAND>...\n";
        assert_eq!(
            clap_error_line(missing, "aegis run"),
            "the following required arguments were not provided: <COMMAND>...; see \
             `aegis run --help`"
        );
    }

    #[test]
    fn the_command_path_skips_options_and_their_values() {
        let root = clap::Command::new("aegis")
            .arg(clap::Arg::new("home").long("home").global(true))
            .subcommand(
                clap::Command::new("task")
                    .subcommand(clap::Command::new("logs").arg(clap::Arg::new("id"))),
            );
        let path = |args: &[&str]| {
            command_path(
                &root,
                &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            path(&["--home", "task", "task", "logs", "x"]),
            "aegis task logs"
        );
        assert_eq!(
            path(&["--home=/h", "task", "-f", "logs"]),
            "aegis task logs"
        );
        assert_eq!(path(&["nope"]), "aegis");
        assert_eq!(path(&["--", "task"]), "aegis");
    }

    #[test]
    fn tables_align() {
        let t = table(&["ID", "STATE"], &[vec!["task-1".into(), "running".into()]]);
        assert_eq!(t, "ID       STATE\ntask-1   running\n");
    }

    #[test]
    fn ages() {
        let now = humantime::parse_rfc3339("2025-01-01T01:00:00Z").unwrap();
        assert_eq!(age("2025-01-01T00:59:30Z", now), "30s ago");
        assert_eq!(age("2025-01-01T00:54:59.5Z", now), "5m ago");
        assert_eq!(age("2024-12-31T22:00:00Z", now), "3h ago");
        assert_eq!(age("2024-12-29T01:00:00Z", now), "3d ago");
        assert_eq!(age("2025-01-01T02:00:00Z", now), "0s ago");
        assert_eq!(age("yesterday", now), "yesterday");
    }

    #[test]
    fn commands_are_quoted_and_cut() {
        let argv = ["sh", "-c", "echo 'hi' there", ""].map(String::from);
        assert_eq!(
            command_line(&argv, 100),
            r#"sh -c 'echo '\''hi'\'' there' ''"#
        );
        assert_eq!(command_line(&argv, 10), "sh -c '...");
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("averylongword x", 4), ["averylongword", "x"]);
        assert!(wrap("  ", 4).is_empty());
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(elapsed(Duration::from_secs(492)), "8m12s");
    }
}
