//! `aegis task ls`.

use std::time::SystemTime;

use aegis_api::Task;

use crate::context::Context;
use crate::render;

/// List tasks, oldest first.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: ID STATE IMAGE EXIT CREATED COMMAND. With --json, the array of task objects of
`GET /v1/tasks` (the fields of `aegis task inspect`).

Examples:
  aegis task ls
  aegis task ls --json | jq -r '.[] | select(.state == \"running\") | .id'")]
pub struct Args {
    /// Print the tasks as a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let tasks = ctx.client().list_tasks().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
    } else {
        print!("{}", table(&tasks, SystemTime::now()));
    }
    Ok(0)
}

fn table(tasks: &[Task], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.state.as_str().to_string(),
                t.image.clone(),
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                render::age(&t.created_at, now),
                render::command_line(&t.command, 40),
            ]
        })
        .collect();
    render::table(
        &["ID", "STATE", "IMAGE", "EXIT", "CREATED", "COMMAND"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::TaskState;

    #[test]
    fn a_row_per_task() {
        let task = Task {
            id: "task-1".into(),
            state: TaskState::Exited,
            command: vec!["echo".into(), "hello world".into()],
            image: "debian".into(),
            vcpus: 1,
            memory_mib: 512,
            timeout_secs: None,
            exit_code: Some(0),
            error: None,
            created_at: "2025-01-01T00:00:00Z".into(),
            started_at: None,
            ended_at: None,
            stdout_bytes: 12,
            stderr_bytes: 0,
            artifacts_dir: None,
            guest_kernel: None,
            workspace: None,
        };
        let now = humantime::parse_rfc3339("2025-01-01T00:00:42Z").unwrap();
        let out = table(&[task], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "STATE", "IMAGE", "EXIT", "CREATED", "COMMAND"]
        );
        assert!(
            lines[1].starts_with("task-1   exited   debian   0      42s ago   echo 'hello world'"),
            "{out}"
        );
        assert_eq!(table(&[], now).lines().count(), 1);
    }
}
