//! `kubectl ghost`: the plugin found by kubectl on PATH (the ghost binary linked as
//! kubectl-ghost), against the real operator and engine pods.

use std::path::PathBuf;

use super::*;
use harness::{Output, run};

/// A PATH where kubectl finds the plugin and its completion hook.
struct Plugin {
    dir: PathBuf,
    path: String,
    kubeconfig: String,
    kubectl: PathBuf,
}

impl Plugin {
    fn install(cluster: &Cluster) -> Plugin {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubectl-plugin");
        std::fs::create_dir_all(&dir).expect("plugin dir");
        for name in ["kubectl-ghost", "kubectl_complete-ghost"] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ghost"), &link)
                .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
        }
        let path = format!(
            "{}:{}:{}",
            dir.display(),
            cluster.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Plugin {
            dir,
            path,
            kubeconfig: cluster.kubeconfig.display().to_string(),
            kubectl: cluster.kubectl_path(),
        }
    }

    /// `kubectl ARGS` with the plugin on PATH (kubectl passes its environment, KUBECONFIG
    /// included, to the plugin).
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let env = [
            ("PATH", self.path.as_str()),
            ("KUBECONFIG", self.kubeconfig.as_str()),
        ];
        run(&self.kubectl, args, stdin, &env).await
    }

    /// `kubectl ghost ARGS -n NAMESPACE`, which must succeed.
    async fn ghost(&self, args: &[&str]) -> String {
        let out = self.ghost_in(args, None).await;
        assert!(
            out.ok,
            "kubectl ghost {args:?} failed:\n{}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    async fn ghost_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut full = vec!["ghost"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-n", NAMESPACE]);
        self.kubectl(&full, stdin).await
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The line of `list` that names `name`.
fn row_of<'a>(list: &'a str, name: &str) -> &'a str {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in:\n{list}"))
}

pub async fn plugin(cluster: &Cluster, stack: &Stack) {
    const J: &str = "kubectl-ghost";
    let plugin = Plugin::install(cluster);
    // Slow, and postponed until `cut-over`: every step below sees it running, however long a
    // loaded machine takes to start a browser.
    let mut table = Table::create("k8s_plugin", 20_000).await;
    let manifest = Manifest::new(
        "plugin",
        table.database(),
        "ADD COLUMN extra INT NOT NULL DEFAULT 3",
    )
    .slow()
    .with_spec("  cutOver:\n    postpone: true\n");
    let name = manifest.name.as_str();
    apply(cluster, &manifest).await;
    wait_copying(stack, name).await;

    // kubectl's own completion asks the plugin's hook: commands, then the migration's name.
    let out = plugin.kubectl(&["__complete", "ghost", "thr"], None).await;
    assert!(
        out.stdout.lines().any(|l| l == "throttle"),
        "{}",
        out.stdout
    );
    let out = plugin
        .kubectl(
            &["__complete", "ghost", "-n", NAMESPACE, "throttle", ""],
            None,
        )
        .await;
    assert!(
        out.stdout.lines().any(|l| l == name),
        "{}{}",
        out.stdout,
        out.stderr
    );
    say(J, "kubectl __complete ghost … completes commands and names");

    let list = plugin.ghost(&["list"]).await;
    let row = row_of(&list, name);
    assert!(row.contains("Copying") && row.contains('%'), "{list}");
    let json: Value =
        serde_json::from_str(&plugin.ghost(&["list", "-A", "-o", "json"]).await).expect("json");
    assert!(
        json["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["metadata"]["name"] == name)),
        "{json:#}"
    );
    say(
        J,
        format!(
            "list: {}",
            row.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    );

    // The operator's read-only page lists it too, in a real browser.
    let browser = crate::common::browser::Browser::start().await;
    browser
        .goto(&format!("{}/", stack.operator_url().await))
        .await;
    let row_css = format!("tr[data-name=\"{NAMESPACE}/{name}\"]");
    let shown = browser
        .wait_text(&row_css, "listed", PHASE_TIMEOUT, |t| {
            t.contains("Copying") || t.contains("Postponed")
        })
        .await;
    browser.screenshot("operator-page.png").await;
    drop(browser);
    say(J, format!("operator page: {}", shown.replace('\n', " ")));

    // throttle → the engine reports it, and `status` shows it in gh-ost's words.
    let asked = Instant::now();
    let out = plugin.ghost(&["throttle", name]).await;
    assert!(out.contains("ghost/throttle=true"), "{out}");
    let (throttled, took) = stack
        .wait_smig(name, "throttled", PHASE_TIMEOUT, |smig| {
            smig["status"]["progress"]["throttle"]["active"] == true
        })
        .await;
    wait_throttled(stack, name).await;
    let status = plugin.ghost(&["status", name]).await;
    eprintln!("kubectl ghost status {name}:\n{status}");
    assert!(
        status.contains("Phase:       Copying") || status.contains("Phase:       Postponed"),
        "{status}"
    );
    for expected in [
        "State: throttled,",
        "throttle=true (annotation)",
        "Conditions:",
        "Events:",
        "Next:        kubectl ghost unthrottle",
    ] {
        assert!(status.contains(expected), "no {expected:?} in:\n{status}");
    }
    let reason = throttled["status"]["progress"]["throttle"]["reason"]
        .as_str()
        .unwrap_or("throttled")
        .to_string();
    let list = plugin.ghost(&["list"]).await;
    assert!(
        row_of(&list, name).contains(&reason),
        "{reason:?} not in:\n{list}"
    );
    say(
        J,
        format!(
            "throttle → throttled in {} ({} with the command)",
            fmt(took),
            fmt(asked.elapsed())
        ),
    );

    // logs: the engine pod's own output.
    let logs = plugin.ghost(&["logs", name, "--tail", "50"]).await;
    assert!(logs.lines().count() > 1, "{logs}");

    plugin.ghost(&["unthrottle", name]).await;
    stack
        .wait_smig(name, "unthrottled", PHASE_TIMEOUT, |smig| {
            smig["status"]["progress"]["throttle"]["active"] == false
        })
        .await;

    // postpone, then watch the bar while `cut-over` finishes it.
    plugin.ghost(&["postpone", name]).await;
    speed_up(cluster, name).await;
    stack.wait_phase(name, "Postponed", PHASE_TIMEOUT).await;
    let watcher = {
        let (kubectl, path, kubeconfig) = (
            plugin.kubectl.clone(),
            plugin.path.clone(),
            plugin.kubeconfig.clone(),
        );
        let name = name.to_string();
        tokio::spawn(async move {
            let env = [("PATH", path.as_str()), ("KUBECONFIG", kubeconfig.as_str())];
            run(
                &kubectl,
                &["ghost", "watch", &name, "-n", NAMESPACE],
                None,
                &env,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut = Instant::now();
    plugin.ghost(&["cut-over", name]).await;
    let watched = tokio::time::timeout(PHASE_TIMEOUT, watcher)
        .await
        .expect("watch ends when the migration does")
        .expect("watch task");
    assert!(watched.ok, "watch: {}{}", watched.stdout, watched.stderr);
    assert!(
        watched.stdout.contains("Postponed")
            && watched.stdout.contains(&format!("{name} Succeeded")),
        "{}",
        watched.stdout
    );
    say(
        J,
        format!(
            "cut-over → watch exited 0 with Succeeded {} later",
            fmt(cut.elapsed())
        ),
    );

    // A finished migration refuses controls, and offers its revert.
    let out = plugin.ghost_in(&["throttle", name], None).await;
    assert!(
        !out.ok && out.stderr.contains("already ended (Succeeded)"),
        "{}",
        out.stderr
    );
    let named = plugin
        .ghost(&["revert", name, "--dry-run", "-o", "name"])
        .await;
    assert_eq!(
        named.trim(),
        format!("schemamigration.ghost.dev/{name}-revert")
    );
    let dry = plugin.ghost(&["revert", name, "--dry-run"]).await;
    assert!(
        dry.contains("revert:") && dry.contains("oldTable: _"),
        "{dry}"
    );
    let out = plugin.ghost(&["revert", name]).await;
    let revert = format!("{name}-revert");
    assert!(out.contains(&revert), "{out}");
    // The plugin copies no labels (an Argo CD instance label would make Argo prune it); the
    // journey's cleanup finds what carries its label.
    let label = format!("{}=true", harness::E2E_LABEL);
    cluster
        .kubectl(&["-n", NAMESPACE, "label", "smig", &revert, &label], None)
        .await;
    // It keeps the spec's postponed cut-over, and says so.
    assert!(
        out.contains(&format!("kubectl ghost cut-over {revert}")),
        "{out}"
    );
    stack.wait_phase(&revert, "Postponed", PHASE_TIMEOUT).await;
    plugin.ghost(&["cut-over", &revert]).await;
    stack.wait_phase(&revert, "Succeeded", PHASE_TIMEOUT).await;
    let columns = table.columns().await;
    assert!(
        columns.iter().all(|c| c != "extra"),
        "not reverted: {columns:?}"
    );
    say(J, "revert created the revert SchemaMigration; it Succeeded");

    // abort asks first: no answer and "n" change nothing; --yes cancels.
    let again = Manifest::new("plugin-abort", table.database(), "ADD COLUMN more INT").slow();
    apply(cluster, &again).await;
    wait_copying(stack, &again.name).await;
    let out = plugin.ghost_in(&["abort", &again.name], None).await;
    assert!(!out.ok && out.stderr.contains("--yes"), "{}", out.stderr);
    let out = plugin.ghost_in(&["abort", &again.name], Some("n\n")).await;
    assert!(
        !out.ok && out.stderr.contains("Not aborted"),
        "{}",
        out.stderr
    );
    let smig = stack.smig(&again.name).await.expect("exists");
    assert!(
        smig["metadata"]["annotations"]["ghost/panic"].is_null(),
        "{smig:#}"
    );
    plugin.ghost(&["abort", &again.name, "--yes"]).await;
    stack
        .wait_phase(&again.name, "Cancelled", PHASE_TIMEOUT)
        .await;
    say(
        J,
        "abort: refused without an answer and on n; --yes → Cancelled",
    );

    // Mistakes are one line that says what to do.
    let out = plugin
        .ghost_in(&["status", "no-such-migration"], None)
        .await;
    assert!(!out.ok, "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("kubectl ghost list -n"),
        "{}",
        out.stderr
    );
    let out = plugin
        .ghost_in(&["list", "--context", "no-such-context"], None)
        .await;
    assert!(
        !out.ok && out.stderr.contains("no-such-context"),
        "{}",
        out.stderr
    );
}
