//! The checkpoint's promises: forward-only progress, resumption at the first unfinished stage,
//! backward-compatible reading, and the chunk-keeping policy.

use proptest::prelude::*;
use serde_json::json;
use stage_machine::{Checkpoint, Stage, StageError, retry_deletes_chunks};
use strum::VariantArray;

fn checkpoint_after(milestones: &[Stage]) -> Checkpoint {
    let mut checkpoint = Checkpoint::default();
    for (at, &stage) in milestones.iter().enumerate() {
        checkpoint.complete(stage, at as i64).unwrap();
    }
    checkpoint
}

#[test]
fn stages_serialise_in_snake_case() {
    let names: Vec<String> = Stage::VARIANTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names,
        [
            "pending",
            "extracting",
            "extracted",
            "saving_markdown",
            "markdown_saved",
            "chunking",
            "chunked",
            "embedding",
            "embedded",
            "complete",
            "failed"
        ]
    );
    for &stage in Stage::VARIANTS {
        let json = serde_json::to_value(stage).unwrap();
        assert_eq!(json, json!(stage.to_string()));
        assert_eq!(serde_json::from_value::<Stage>(json).unwrap(), stage);
        assert_eq!(stage.to_string().parse::<Stage>().unwrap(), stage);
    }
}

#[test]
fn next_walks_the_pipeline_and_stops_at_complete() {
    let mut walked = vec![Stage::Pending];
    while let Some(next) = walked.last().unwrap().next() {
        walked.push(next);
    }
    assert_eq!(walked.len(), 10);
    assert_eq!(*walked.last().unwrap(), Stage::Complete);
    assert_eq!(Stage::Failed.next(), None);
    assert_eq!(Stage::Chunking.milestone(), Some(Stage::Chunked));
    assert_eq!(Stage::Chunked.working_stage(), Some(Stage::Chunking));
}

#[test]
fn resume_stage_is_the_first_unfinished_stage() {
    let cases = [
        (vec![], Stage::Extracting),
        (vec![Stage::Extracted], Stage::SavingMarkdown),
        (vec![Stage::Extracted, Stage::MarkdownSaved], Stage::Chunking),
        (vec![Stage::Extracted, Stage::MarkdownSaved, Stage::Chunked], Stage::Embedding),
        (vec![Stage::Extracted, Stage::MarkdownSaved, Stage::Chunked, Stage::Embedded], Stage::Complete),
    ];
    for (milestones, expected) in cases {
        assert_eq!(checkpoint_after(&milestones).resume_stage(), expected, "after {milestones:?}");
    }
    let done = checkpoint_after(&Stage::milestones().collect::<Vec<_>>());
    assert_eq!(done.resume_stage(), Stage::Complete);
}

#[test]
fn chunks_are_kept_from_chunked_on_and_redone_before() {
    let keep = [Stage::Chunked, Stage::Embedding, Stage::Embedded, Stage::Complete];
    let redo = [
        Stage::Pending,
        Stage::Extracting,
        Stage::Extracted,
        Stage::SavingMarkdown,
        Stage::MarkdownSaved,
        Stage::Chunking,
    ];
    for stage in keep {
        assert!(!retry_deletes_chunks(stage), "{stage} must keep chunks");
    }
    for stage in redo {
        assert!(retry_deletes_chunks(stage), "{stage} must redo chunks");
    }
}

#[test]
fn milestones_cannot_be_skipped_or_repeated() {
    let mut checkpoint = Checkpoint::default();
    assert_eq!(
        checkpoint.complete(Stage::Chunked, 1),
        Err(StageError::OutOfOrder { attempted: Stage::Chunked, expected: Stage::Extracted })
    );
    checkpoint.complete(Stage::Extracted, 1).unwrap();
    assert!(checkpoint.complete(Stage::Extracted, 2).is_err());
    assert_eq!(checkpoint.completed_stages, [Stage::Extracted]);
}

#[test]
fn begin_accepts_only_the_working_stage_due() {
    let mut checkpoint = checkpoint_after(&[Stage::Extracted]);
    assert!(checkpoint.begin(Stage::Chunking, 5).is_err());
    assert!(checkpoint.begin(Stage::MarkdownSaved, 5).is_err());
    checkpoint.begin(Stage::SavingMarkdown, 5).unwrap();
    assert_eq!(checkpoint.processing_stage, Stage::SavingMarkdown);
    assert_eq!(checkpoint.stage_timestamps[&Stage::SavingMarkdown], 5);
}

#[test]
fn metadata_from_an_older_version_reads_as_pending() {
    for old in [json!({}), json!(null), json!({"attempt_note": "x"}), json!("garbage")] {
        let checkpoint = Checkpoint::from_metadata(&old);
        assert_eq!(checkpoint.processing_stage, Stage::Pending, "{old}");
        assert_eq!(checkpoint.resume_stage(), Stage::Extracting, "{old}");
    }
}

#[test]
fn a_checkpoint_round_trips_through_metadata() {
    let mut checkpoint = checkpoint_after(&[Stage::Extracted, Stage::MarkdownSaved, Stage::Chunked]);
    checkpoint.facts.chunk_count = Some(42);
    checkpoint.facts.embedded_chunks = 16;
    checkpoint.facts.markdown_hash = Some("abc".into());
    let metadata = checkpoint.to_metadata();
    assert_eq!(metadata["processing_stage"], json!("chunked"));
    assert_eq!(metadata["completed_stages"], json!(["extracted", "markdown_saved", "chunked"]));
    assert_eq!(metadata["stage_timestamps"]["chunked"], json!(2));
    assert_eq!(Checkpoint::from_metadata(&metadata), checkpoint);
}

#[test]
fn a_damaged_checkpoint_is_cut_at_its_first_gap() {
    let metadata = json!({
        "processing_stage": "embedded",
        "completed_stages": ["extracted", "chunked", "embedded"],
    });
    let checkpoint = Checkpoint::from_metadata(&metadata);
    assert_eq!(checkpoint.completed_stages, [Stage::Extracted]);
    assert_eq!(checkpoint.resume_stage(), Stage::SavingMarkdown);
}

#[test]
fn rewinding_to_a_stage_redoes_it_and_everything_after() {
    let mut checkpoint = checkpoint_after(&Stage::milestones().collect::<Vec<_>>());
    checkpoint.facts.chunk_count = Some(3);
    checkpoint.facts.embedded_chunks = 3;
    checkpoint.rewind_to(Stage::Chunked);
    assert_eq!(checkpoint.completed_stages, [Stage::Extracted, Stage::MarkdownSaved]);
    assert_eq!(checkpoint.resume_stage(), Stage::Chunking);
    assert_eq!(checkpoint.facts.chunk_count, None);
    assert_eq!(checkpoint.facts.embedded_chunks, 0);

    let mut checkpoint = checkpoint_after(&Stage::milestones().collect::<Vec<_>>());
    checkpoint.rewind_to(Stage::Embedding);
    assert_eq!(checkpoint.resume_stage(), Stage::Embedding);
}

#[test]
fn every_rewind_target_leaves_work_to_do_and_nothing_else_is_one() {
    let names: Vec<String> = Stage::rewind_targets().map(|stage| stage.to_string()).collect();
    assert_eq!(
        names,
        [
            "extracting",
            "extracted",
            "saving_markdown",
            "markdown_saved",
            "chunking",
            "chunked",
            "embedding",
            "embedded"
        ]
    );
    for &stage in Stage::VARIANTS {
        let mut checkpoint = checkpoint_after(&Stage::milestones().collect::<Vec<_>>());
        checkpoint.rewind_to(stage);
        let work_left = checkpoint.resume_stage() != Stage::Complete;
        assert_eq!(stage.is_rewind_target(), work_left && stage != Stage::Pending, "{stage}");
    }
}

#[derive(Debug, Clone)]
enum Event {
    /// The current attempt finishes the stage it is working on.
    CompleteNext,
    /// The attempt dies; the next one reloads the last saved checkpoint.
    Crash,
    /// The attempt saves its checkpoint.
    Save,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::CompleteNext),
        2 => Just(Event::Save),
        1 => Just(Event::Crash),
    ]
}

proptest! {
    /// Any sequence of stage completions, saves and crashes resumes at a stage never earlier than
    /// the last saved milestone, and never skips one.
    #[test]
    fn crashes_never_skip_or_lose_saved_stages(events in proptest::collection::vec(event(), 0..60)) {
        // What was saved, as the live checkpoint held it: the oracle for a reload, kept apart
        // from the parsing that the reload exercises.
        let mut saved = Checkpoint::default().to_metadata();
        let mut saved_stages: Vec<Stage> = Vec::new();
        let mut live = Checkpoint::from_metadata(&saved);
        let mut clock = 0;
        for event in events {
            clock += 1;
            match event {
                Event::CompleteNext => {
                    let resume = live.resume_stage();
                    if resume == Stage::Complete { continue; }
                    live.begin(resume, clock).unwrap();
                    live.complete(resume.milestone().unwrap(), clock).unwrap();
                }
                Event::Save => {
                    saved = live.to_metadata();
                    saved_stages = live.completed_stages.clone();
                }
                Event::Crash => {
                    live = Checkpoint::from_metadata(&saved);
                    prop_assert_eq!(&live.completed_stages, &saved_stages, "a reload keeps exactly what was saved");
                    let last_saved = saved_stages.last().copied().unwrap_or(Stage::Pending);
                    let resume = live.resume_stage();
                    // Never earlier than the last completed milestone…
                    prop_assert!(resume > last_saved || resume == Stage::Complete);
                    // …and never past the stage right after it.
                    if last_saved != Stage::Complete {
                        prop_assert_eq!(Some(resume), last_saved.next());
                    }
                }
            }
            let milestones: Vec<Stage> = Stage::milestones().take(live.completed_stages.len()).collect();
            prop_assert_eq!(&live.completed_stages, &milestones);
        }
    }

    /// A checkpoint built through the API writes the JSON an operator (or an older version)
    /// reads, built here by hand from the documented shape, and that JSON reads back as the same
    /// checkpoint.
    #[test]
    fn a_checkpoint_is_written_as_the_documented_json_and_read_back_from_it(
        reached in 0usize..=5,
        times in proptest::collection::vec(0i64..1_000_000_000_000, 5),
        chunk_count in proptest::option::of(0u32..10_000),
        embedded_chunks in 0u32..10_000,
        ai_requests in 0u64..1_000,
        markdown_hash in proptest::option::of("[0-9a-f]{64}"),
    ) {
        const MILESTONES: [&str; 5] = ["extracted", "markdown_saved", "chunked", "embedded", "complete"];
        let mut checkpoint = Checkpoint::default();
        for (stage, at) in Stage::milestones().zip(&times).take(reached) {
            checkpoint.complete(stage, *at).unwrap();
        }
        checkpoint.facts.chunk_count = chunk_count;
        checkpoint.facts.embedded_chunks = embedded_chunks;
        checkpoint.facts.ai_requests = ai_requests;
        checkpoint.facts.markdown_hash = markdown_hash.clone();

        let timestamps: serde_json::Map<String, serde_json::Value> =
            MILESTONES.iter().zip(&times).take(reached).map(|(name, at)| (name.to_string(), json!(at))).collect();
        let expected = json!({
            "processing_stage": if reached == 0 { "pending" } else { MILESTONES[reached - 1] },
            "completed_stages": MILESTONES[..reached],
            "stage_timestamps": timestamps,
            "facts": {
                "markdown_hash": markdown_hash,
                "markdown_bytes": null,
                "chunk_count": chunk_count,
                "embedded_chunks": embedded_chunks,
                "ai_requests": ai_requests,
                "ai_cache_hits": 0,
                "ai_inputs": 0,
                "embedding_pass_inputs": 0,
                "ai_tokens": 0,
                "embedding_batch": null,
            },
        });
        prop_assert_eq!(checkpoint.to_metadata(), expected.clone());
        prop_assert_eq!(Checkpoint::from_metadata(&expected), checkpoint);
    }

    /// Whatever JSON a job's metadata holds, reading it never panics and yields a valid checkpoint.
    #[test]
    fn any_metadata_reads_as_a_valid_checkpoint(
        stages in proptest::collection::vec(proptest::sample::select(Stage::VARIANTS), 0..12),
        processing in proptest::sample::select(Stage::VARIANTS),
    ) {
        let metadata = json!({ "processing_stage": processing, "completed_stages": stages });
        let checkpoint = Checkpoint::from_metadata(&metadata);
        let expected: Vec<Stage> = Stage::milestones().take(checkpoint.completed_stages.len()).collect();
        prop_assert_eq!(&checkpoint.completed_stages, &expected);
        prop_assert!(checkpoint.processing_stage >= checkpoint.last_completed()
            || checkpoint.processing_stage == Stage::Failed);
    }
}
