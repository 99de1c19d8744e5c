//! Links in the documentation resolve: README.md, BENCHMARKS.md and every
//! docs/*.md. A relative link must name a file that exists (relative to the
//! linking file's directory); `#anchor` and `file.md#anchor` must name a
//! heading of that file, spelled as GitHub spells its anchors. http(s) and
//! mailto links are not followed. No root needed.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor for a heading: lowercase, spaces become '-', every other
/// character that is not alphanumeric, '-' or '_' is dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(md: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in md.lines().enumerate() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// The text of a heading as GitHub renders it for its anchor: link syntax
/// `[text](target)` keeps only `text`.
fn heading_text(h: &str) -> String {
    let h = h.trim().trim_end_matches('#').trim_end();
    let mut out = String::new();
    let mut rest = h;
    while let Some(open) = rest.find("](") {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        out.push_str(&rest[..open].replacen('[', "", 1));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every anchor the headings of `md` produce (duplicates get `-1`, `-2`, ...).
fn anchors(md: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for (_, line) in prose_lines(md) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&heading_text(&line[hashes..]));
        let mut a = base.clone();
        let mut n = 0;
        while out.contains(&a) {
            n += 1;
            a = format!("{base}-{n}");
        }
        out.insert(a);
    }
    out
}

/// Inline code spans removed, so that `[x](y)` inside backticks is no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// Targets of the inline links `[text](target)` of `md`, with line numbers.
fn links(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(md) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            // An optional title: `(target "title")`.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.trim_matches(|c| c == '<' || c == '>').to_string()));
            rest = &after[end + 1..];
        }
    }
    out
}

/// What is wrong with the links of `text`, the contents of the markdown file
/// `file`: one line per broken link.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    for (line, target) in links(text) {
        let at = format!("{}:{line}: ({target})", file.display());
        if target.is_empty() {
            problems.push(format!("{at}: empty link target"));
            continue;
        }
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with("mailto:")
        {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let (linked, linked_text) = if path.is_empty() {
            (file.to_path_buf(), Some(text.to_string()))
        } else {
            let p = dir.join(path);
            if !p.exists() {
                problems.push(format!("{at}: {} does not exist", p.display()));
                continue;
            }
            let t = if p.extension().and_then(|e| e.to_str()) == Some("md") {
                std::fs::read_to_string(&p).ok()
            } else {
                None
            };
            (p, t)
        };
        let Some(anchor) = anchor else { continue };
        match linked_text {
            Some(t) => {
                if !anchors(&t).contains(anchor) {
                    problems.push(format!(
                        "{at}: no heading in {} has the anchor #{anchor}",
                        linked.display()
                    ));
                }
            }
            None => problems.push(format!(
                "{at}: #{anchor} points into {}, which is not markdown",
                linked.display()
            )),
        }
    }
    problems
}

fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no docs/*.md found");
    files.extend(docs);
    files
}

#[test]
fn every_documentation_link_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in doc_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        checked += links(&text).len();
        problems.extend(broken_links(&f, &text));
    }
    // The scan must find the links that are there (README alone has dozens).
    assert!(
        checked >= 50,
        "only {checked} links found: is the scan broken?"
    );
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn readme_links_every_docs_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let targets: HashSet<String> = links(&readme)
        .into_iter()
        .map(|(_, t)| t.split('#').next().unwrap().to_string())
        .collect();
    for f in doc_files().iter().skip(2) {
        let rel = format!("docs/{}", f.file_name().unwrap().to_string_lossy());
        assert!(targets.contains(&rel), "README.md does not link {rel}");
    }
}

#[test]
fn github_anchors() {
    assert_eq!(
        slug("Many clusters (Thanos, Mimir)"),
        "many-clusters-thanos-mimir"
    );
    assert_eq!(
        slug("Census (collector `maps` and the holder collectors)"),
        "census-collector-maps-and-the-holder-collectors"
    );
    assert_eq!(
        slug("Soak: one hour of scrapes"),
        "soak-one-hour-of-scrapes"
    );
    assert_eq!(slug("snake_case and-dash"), "snake_case-and-dash");
    let a = anchors("# Title\n## Same\n## Same\n```\n# not a heading\n```\n");
    let want: HashSet<String> = ["title", "same", "same-1"].map(String::from).into();
    assert_eq!(a, want);
}

/// The checker can fail: made-up broken links are reported, good ones not.
#[test]
fn broken_links_are_reported() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let md = "# Real heading\n\
              [ok](#real-heading) [ok file](docs/runbooks.md) \
              [ok both](docs/runbooks.md#bpfmapnearlyfull) [web](https://example.com/#x)\n\
              [missing file](docs/no-such-page.md)\n\
              [missing anchor](#no-such-heading)\n\
              [missing anchor elsewhere](docs/runbooks.md#no-such-alert)\n\
              `[in code](nowhere.md)`\n\
              ```\n[in a fence](nowhere.md)\n```\n";
    let problems = broken_links(&file, md);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains(":3: (docs/no-such-page.md)")
            && problems[0].contains("does not exist")
    );
    assert!(problems[1].contains(":4: (#no-such-heading)") && problems[1].contains("no heading"));
    assert!(problems[2].contains("docs/runbooks.md#no-such-alert"));
}
