//! The dashboard driven as a person would drive it: headless Chromium, through chromedriver
//! (WebDriver), against a real `quire serve` and real `quire worker` processes on one SQLite
//! data directory. Every step clicks, types and reads pages; the store is never touched directly.
//!
//! The five flows run in order on one server, each starting from what the one before left:
//! 1. two books uploaded from the Documents page reach `complete`;
//! 2. the second book's connections show the two passages side by side, and lead to the first;
//! 3. a worker is killed (`kill -9`) while it holds a job; the job, out of attempts, is retried
//!    from its page and completes;
//! 4. a job is replayed from `chunked`: its timeline falls back to `markdown_saved` (chunking
//!    runs again, and everything after it), then grows again to `complete`;
//! 5. a pending job is cancelled from its page.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`, which
//! `.ci/run` does; or `QUIRE_TEST_CHROMIUM` / `QUIRE_TEST_CHROMEDRIVER`). Without them the test
//! says so and passes, unless `CI=true`, where it fails. With `QUIRE_SCREENSHOT_DIR` set it
//! saves the screenshots the README shows (`just screenshots`).
//!
//! Waiting is by reading the page again until it shows what the step expects, with a deadline;
//! no assertion depends on how long anything took.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use epub_fixtures::{Block, BookSpec, ChapterSpec};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::processes::{Processes, ServeProcess, WorkerProcess};

/// How long any one step may take to show on its page.
const DEADLINE: Duration = Duration::from_secs(90);

/// A child process killed when the test ends, whichever way.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An executable named by `variable`, or found on the PATH under one of `names`.
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|file| file.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// chromedriver on a port of its own, and a headless Chromium session through it.
async fn browser(chromedriver: &Path, chromium: &Path) -> (Killed, Client) {
    let port = free_port();
    let driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Killed(driver);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < DEADLINE, "chromedriver did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            // As root (CI), Chromium needs `--no-sandbox`; a container's /dev/shm is small.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// `quire serve` on a port of its own, over the cluster's data directory; its base URL.
fn serve(cluster: &Processes) -> (ServeProcess, String) {
    let mut command = cluster.quire();
    command.args(["serve", "--addr", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    let server = ServeProcess::start(command);
    let base = format!("http://{}", server.addr);
    (server, base)
}

/// A book of `paragraphs`, written to the cluster's directory.
fn book(cluster: &Processes, file: &str, title: &str, paragraphs: &[&str]) -> PathBuf {
    let blocks = paragraphs.iter().map(|text| Block::Paragraph((*text).to_owned())).collect();
    let chapter = ChapterSpec::new("ch1.xhtml", "The Voyage", blocks);
    let path = cluster.dir.path().join(file);
    std::fs::write(&path, epub_fixtures::build_epub(&BookSpec::new(title, "A. Tester", "en", vec![chapter])))
        .expect("book written");
    path
}

const SHARED: &str = "The white whale breached beside the Nantucket harpoon boat, and the crew rowed hard \
    through the cold grey swell while the mate stood ready with the iron.";

/// The browser, the server it talks to, and the workers' cluster.
struct Session {
    client: Client,
    base: String,
    cluster: Processes,
    screenshots: Option<PathBuf>,
}

impl Session {
    async fn open(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("the page opens");
    }

    async fn page(&self) -> String {
        self.client.source().await.expect("the page's source")
    }

    async fn path(&self) -> String {
        self.client.current_url().await.expect("the page's URL").path().to_owned()
    }

    /// The browser's path once it satisfies `arrived`: a click's navigation may still be under
    /// way when the click returns.
    async fn arrive(&self, what: &str, arrived: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let path = self.path().await;
            if arrived(&path) {
                return path;
            }
            assert!(started.elapsed() < DEADLINE, "never arrived at {what}; still at {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|error| panic!("no {css}: {error}"));
        element.click().await.unwrap_or_else(|error| panic!("cannot click {css}: {error}"));
    }

    /// Reads `path` again until its page satisfies `shows`; the page.
    async fn wait_for(&self, path: &str, what: &str, shows: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            self.open(path).await;
            let page = self.page().await;
            if shows(&page) {
                return page;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{path} never showed {what}; it shows:\n{page}\nworkers:\n{}",
                self.cluster.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Uploads `file` from the Documents page, as a person picks a file and presses Upload; the
    /// document's id, from the page it lands on.
    async fn upload(&self, file: &Path) -> String {
        self.open("/documents").await;
        let input = self.client.find(Locator::Css("input[type=file]")).await.expect("a file input");
        input.send_keys(file.to_str().expect("a UTF-8 path")).await.expect("the file picked");
        self.click("form[action='/ui/documents'] button").await;
        let path = self.arrive("the uploaded book's page", |path| path != "/documents").await;
        let id = path.strip_prefix("/documents/").unwrap_or_else(|| panic!("the upload landed on {path}"));
        id.to_owned()
    }

    /// The id of the `process_document` job on a document's page.
    async fn job_of(&self, document: &str) -> String {
        self.open(&format!("/documents/{document}")).await;
        let row = self.client.find(Locator::XPath("//tr[td='process_document']//a[starts-with(@href, '/jobs/')]"));
        let link = row.await.expect("the document's job is listed");
        link.text().await.expect("the job's id")
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
        }
    }
}

/// The milestones of a job page's stage timeline, in order.
fn milestones(page: &str) -> Vec<String> {
    let Some(start) = page.find("<th>milestone</th>") else { return Vec::new() };
    let table = &page[start..page[start..].find("</table>").map_or(page.len(), |end| start + end)];
    table.split("<tr><td>").skip(1).filter_map(|row| row.split("</td>").next()).map(str::to_owned).collect()
}

/// How many attempts a job page lists.
fn attempts(page: &str) -> usize {
    let Some(start) = page.find("<th>attempt</th>") else { return 0 };
    let table = &page[start..page[start..].find("</table>").map_or(page.len(), |end| start + end)];
    table.matches("<tr><td>").count()
}

fn status_is(status: &'static str) -> impl Fn(&str) -> bool {
    move |page: &str| page.contains(&format!("<strong>{status}</strong>"))
}

#[tokio::test]
async fn five_flows_through_the_dashboard_in_headless_chromium() {
    let chromedriver = program("QUIRE_TEST_CHROMEDRIVER", &["chromedriver"]);
    let chromium = program("QUIRE_TEST_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
        support::prerequisite_missing("chromium or chromedriver is not installed (Debian: chromium chromium-driver)");
        return;
    };
    let cluster = Processes::sqlite();
    std::fs::create_dir_all(cluster.data_dir()).expect("data directory");
    let (_server, base) = serve(&cluster);
    let (_driver, client) = browser(&chromedriver, &chromium).await;
    let screenshots = std::env::var_os("QUIRE_SCREENSHOT_DIR").map(PathBuf::from);
    let session = Session { client, base, cluster, screenshots };
    let cluster = &session.cluster;

    // 1. Two books uploaded from the page reach `complete`.
    let mut worker = cluster.worker("w1", None, &[]);
    let first = book(cluster, "first.epub", "First Voyage", &[SHARED, "Calm water, grey sky, and no land in sight."]);
    let second =
        book(cluster, "second.epub", "Second Voyage", &["The fog came down over the harbour at noon.", SHARED]);
    let first = session.upload(&first).await;
    let second = session.upload(&second).await;
    for document in [&first, &second] {
        let page = format!("/documents/{document}");
        session.wait_for(&page, "the book complete", |page| page.contains("<p>complete · ")).await;
    }

    // 2. The second book's connections: both passages side by side, the first book one click away.
    let second_page = format!("/documents/{second}");
    let page = session.wait_for(&second_page, "a connection", |page| page.contains(r#"<div class="pair">"#)).await;
    assert!(page.contains("Nantucket harpoon boat"), "the shared passage is shown: {page}");
    session.screenshot("dashboard-document").await;
    session.click(&format!("div.pair a[href='/documents/{first}']")).await;
    let first_page = format!("/documents/{first}");
    session.arrive("the other book, through the connection", |path| path == first_page).await;
    let page = session.wait_for(&first_page, "the first book", |page| page.contains("<h1>First Voyage</h1>")).await;
    assert!(page.contains("Nantucket harpoon boat"), "{page}");

    // 4. Replay from `chunked`: the timeline falls back to the milestone before it (with no
    // worker running, it stays there to be seen), then a worker makes it grow again.
    let job = session.job_of(&first).await;
    let job_page = format!("/jobs/{job}");
    let before = session.wait_for(&job_page, "the job completed", status_is("completed")).await;
    assert_eq!(milestones(&before).last().map(String::as_str), Some("complete"), "{before}");
    let attempts_before = attempts(&before);
    worker.signal("TERM");
    assert!(worker.wait_exit(DEADLINE).await.success(), "w1 stops on SIGTERM");
    let options = session.client.find(Locator::Css("select[name=from]")).await.expect("the replay's stages");
    options.select_by_value("chunked").await.expect("chunked chosen");
    session.click("form[action$='/replay'] button").await;
    let replayed = session
        .wait_for(&job_page, "the timeline rewound", |page| {
            status_is("pending")(page) && milestones(page).last().is_some_and(|last| last == "markdown_saved")
        })
        .await;
    assert!(!milestones(&replayed).iter().any(|milestone| milestone == "chunked"), "{replayed}");
    let mut worker = cluster.worker("w2", None, &[]);
    let after = session.wait_for(&job_page, "the replay completed", status_is("completed")).await;
    let milestones_after = milestones(&after);
    assert_eq!(milestones_after, milestones(&before), "the same milestones again: {after}");
    assert_eq!(attempts(&after), attempts_before + 1, "the replay is one more attempt: {after}");
    session.screenshot("dashboard-job").await;
    worker.signal("TERM");
    assert!(worker.wait_exit(DEADLINE).await.success(), "w2 stops on SIGTERM");

    // 3. A worker killed while it holds a job; out of attempts, the job is retried from its page.
    let mut holder: WorkerProcess = cluster.worker("holder", Some("before_complete=return(600000)"), &[]);
    let third = session.upload(&book(cluster, "third.epub", "Third Voyage", &["A gull cried over the quay."])).await;
    let job = session.job_of(&third).await;
    let job_page = format!("/jobs/{job}");
    session
        .wait_for(&job_page, "the job held at its last step", |page| {
            status_is("processing")(page) && milestones(page).last().is_some_and(|last| last == "complete")
        })
        .await;
    holder.kill9();
    // The next worker crashes the job's two remaining attempts at the same step.
    let crasher = cluster.worker("crasher", Some("before_complete=2*return"), &[]);
    let dead = session.wait_for(&job_page, "the job dead-lettered", status_is("dead")).await;
    assert!(dead.contains("<td>holder</td>"), "the killed worker's attempt is in the history: {dead}");
    assert_eq!(attempts(&dead), 3, "{dead}");
    session.open("/dead").await;
    assert!(session.page().await.contains(&format!(r#"<a href="/jobs/{job}">{job}</a>"#)));
    session.screenshot("dashboard-dead-letters").await;
    session.open(&job_page).await;
    session.click("form[action$='/retry'] button").await;
    let retried = session.wait_for(&job_page, "the retried job completed", status_is("completed")).await;
    assert_eq!(attempts(&retried), 4, "{retried}");
    session.wait_for(&format!("/documents/{third}"), "the book complete", |page| page.contains("<p>complete · ")).await;

    // 5. With no worker running, a pending job is cancelled from its page.
    let mut crasher = crasher;
    crasher.signal("TERM");
    assert!(crasher.wait_exit(DEADLINE).await.success(), "the worker stops on SIGTERM");
    let fourth = session.upload(&book(cluster, "fourth.epub", "Fourth Voyage", &["Nobody reads this one."])).await;
    let job = session.job_of(&fourth).await;
    let job_page = format!("/jobs/{job}");
    session.open(&job_page).await;
    assert!(status_is("pending")(&session.page().await));
    session.click("form[action$='/cancel'] button").await;
    let cancelled = session.wait_for(&job_page, "the job cancelled", status_is("cancelled")).await;
    assert!(!cancelled.contains("/cancel\""), "a cancelled job offers no cancel: {cancelled}");

    session.open("/").await;
    let overview = session.page().await;
    assert!(overview.contains("The reaper's last pass: "), "{overview}");
    assert!(!overview.contains("none yet"), "the workers' reapers have passed: {overview}");
    session.screenshot("dashboard-queue").await;
    session.client.clone().close().await.expect("the session closes");
}
