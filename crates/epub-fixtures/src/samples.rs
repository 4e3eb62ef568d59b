//! Ready-made books: the three standard fixtures and a deterministic corpus of distinct books.

use crate::package::build_epub;
use crate::spec::{Block, BookSpec, ChapterSpec, EpubVersion, noteref};

fn p(text: &str) -> Block {
    Block::Paragraph(text.to_owned())
}

fn h(level: u8, text: &str) -> Block {
    Block::Heading { level, text: text.to_owned() }
}

/// The sample book: three chapters exercising headings (h1–h3), paragraphs, both list kinds, a
/// blockquote, emphasis, a footnote, a `<br/>`, an empty self-closing `<title/>` and non-ASCII text.
pub fn sample_book_spec() -> BookSpec {
    let one = ChapterSpec::new(
        "ch1.xhtml",
        "Chapter One: Beginnings",
        vec![
            p("The lighthouse keeper rose before dawn, as she had done for <em>forty years</em>, and \
               climbed the <strong>one hundred and twelve</strong> steps to the lamp."),
            h(2, "The Lamp Room"),
            p("She trimmed the wick, polished the lens and wrote in the log:<br/>wind north-east, sea calm."),
            h(3, "Supplies"),
            Block::List {
                ordered: false,
                items: vec!["Paraffin oil".into(), "Wicks of <em>cotton</em>".into(), "A brass key".into()],
            },
            p("Every morning followed the same order:"),
            Block::List {
                ordered: true,
                items: vec!["Extinguish the lamp".into(), "Draw the curtains".into(), "Record the weather".into()],
            },
            p("Prices were given as 2*3 shillings and 1. was never a list item here."),
        ],
    );
    let two = ChapterSpec::new(
        "ch2.xhtml",
        "Chapter Two: Voices",
        vec![
            p(&format!("A letter arrived from the mainland{} with news of the harbour.", noteref("fn1", "1"))),
            Block::Quote("Keep the light burning, whatever the weather, for someone is always at sea.".into()),
            h(2, "The Reply"),
            p("She answered the same evening, in a careful and <strong><em>steady</em></strong> hand."),
            Block::Footnote { id: "fn1".into(), text: "The mainland post came only on Thursdays.".into() },
        ],
    );
    // An empty, self-closing `<title/>`: valid XHTML that makes HTML parsers swallow the body.
    let mut three = ChapterSpec::new(
        "ch3.xhtml",
        "Chapter Three: Many Tongues",
        vec![
            p("Les élèves étaient déjà là, à côté du château."),
            p("Die Straße ist groß und weiß."),
            p("Καλημέρα κόσμε, είπε ο φαροφύλακας."),
            p("吾輩は猫である。名前はまだ無い。"),
        ],
    );
    three.title = String::new();
    BookSpec::new("The Lighthouse Sampler", "Ada Quillfeather", "en", vec![one, two, three])
}

/// [`sample_book_spec`] packaged.
pub fn sample_book() -> Vec<u8> {
    build_epub(&sample_book_spec())
}

/// The sample book with a figure (a tiny PNG with alt text) in its first chapter.
pub fn sample_book_with_image_spec() -> BookSpec {
    let mut spec = sample_book_spec();
    spec.title = "The Lighthouse Sampler, Illustrated".into();
    spec.identifier = "urn:quire:fixture:the-lighthouse-sampler-illustrated".into();
    spec.chapters[0].blocks.insert(2, Block::Image { file: "lamp.png".into(), alt: "The lamp at night".into() });
    spec
}

/// [`sample_book_with_image_spec`] packaged.
pub fn sample_book_with_image() -> Vec<u8> {
    build_epub(&sample_book_with_image_spec())
}

/// An EPUB 2 book with an NCX and no navigation document.
pub fn epub2_book_spec() -> BookSpec {
    let one = ChapterSpec::new(
        "part1.xhtml",
        "Part One: The Orchard",
        vec![
            p("The orchard behind the mill had <em>seven</em> old apple trees."),
            h(2, "Bees"),
            p("In spring the bees came from the hives along the wall."),
        ],
    );
    let two = ChapterSpec::new(
        "part2.xhtml",
        "Part Two: The Harvest",
        vec![
            p("By October the baskets were full and the cider press was running."),
            Block::List { ordered: false, items: vec!["Russets".into(), "Pippins".into()] },
        ],
    );
    let mut spec = BookSpec::new("The Orchard Book", "Barnaby Fenwick", "en-GB", vec![one, two]);
    spec.version = EpubVersion::Epub2;
    spec
}

/// [`epub2_book_spec`] packaged.
pub fn epub2_book() -> Vec<u8> {
    build_epub(&epub2_book_spec())
}

/// A small deterministic PRNG (splitmix64): no dependency, same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small; the modulo bias is irrelevant for fixture text.
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A theme: vocabulary that several books share, so a connection engine finds cross-book links.
struct Theme {
    name: &'static str,
    nouns: &'static [&'static str],
    verbs: &'static [&'static str],
    adjectives: &'static [&'static str],
}

const THEMES: &[Theme] = &[
    Theme {
        name: "the sea",
        nouns: &["lighthouse", "harbour", "tide", "storm", "sailor", "lantern", "reef", "gull"],
        verbs: &["guarded", "watched", "crossed", "charted", "weathered"],
        adjectives: &["salt-stained", "stormy", "grey", "restless"],
    },
    Theme {
        name: "the orchard",
        nouns: &["orchard", "beehive", "apple", "blossom", "cider", "beekeeper", "honey"],
        verbs: &["pruned", "harvested", "gathered", "tended"],
        adjectives: &["golden", "fragrant", "ripe", "humming"],
    },
    Theme {
        name: "the stars",
        nouns: &["telescope", "comet", "observatory", "astronomer", "constellation", "eclipse"],
        verbs: &["observed", "measured", "calculated", "mapped"],
        adjectives: &["distant", "brilliant", "faint", "celestial"],
    },
    Theme {
        name: "the railway",
        nouns: &["locomotive", "station", "signalman", "timetable", "tunnel", "platform"],
        verbs: &["signalled", "delayed", "repaired", "inspected"],
        adjectives: &["iron", "punctual", "smoky", "rattling"],
    },
    Theme {
        name: "the library",
        nouns: &["manuscript", "librarian", "archive", "catalogue", "ledger", "reading room"],
        verbs: &["catalogued", "copied", "annotated", "misplaced"],
        adjectives: &["dusty", "forgotten", "leather-bound", "quiet"],
    },
];

const PEOPLE: &[&str] = &["Mara", "Tobias", "Elin", "Joachim", "Perpetua", "Silas", "Odile", "Wendell"];
const CONNECTIVES: &[&str] = &["Meanwhile", "Later that week", "Without a word", "At first light", "In the end"];

fn sentence(rng: &mut Rng, theme: &Theme) -> String {
    let who = rng.pick(PEOPLE);
    let verb = rng.pick(theme.verbs);
    let adjective = rng.pick(theme.adjectives);
    let noun = rng.pick(theme.nouns);
    let other = rng.pick(theme.nouns);
    match rng.below(4) {
        0 => format!("{who} {verb} the {adjective} {noun} near the {other}."),
        1 => format!("{} {who} {verb} the {noun}, thinking of the {adjective} {other}.", rng.pick(CONNECTIVES)),
        2 => format!("Nobody had {verb} a {noun} so {adjective} since the days of the old {other}."),
        _ => format!("The {adjective} {noun} was all that {who} remembered of {}.", theme.name),
    }
}

/// `n` distinct books, deterministic for a given `seed`, as `(file name, EPUB bytes)`.
///
/// Each book draws two of five themes, so books share vocabulary (and so lexical and semantic
/// links) with other books that drew the same theme. Each has three chapters of four to six
/// paragraphs of three to five sentences.
pub fn corpus_of(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(seed ^ 0x5157_4952_4551_5549);
    (0..n)
        .map(|index| {
            let first = rng.below(THEMES.len());
            let second = (first + 1 + rng.below(THEMES.len() - 1)) % THEMES.len();
            let themes = [&THEMES[first], &THEMES[second]];
            let title = format!(
                "Book {}: The {} {}",
                index + 1,
                capitalise(rng.pick(themes[0].adjectives)),
                capitalise(rng.pick(themes[1].nouns))
            );
            let chapters = (1..=3)
                .map(|number| {
                    let theme = themes[number % 2];
                    let mut blocks = Vec::new();
                    for _ in 0..4 + rng.below(3) {
                        let sentences: Vec<String> = (0..3 + rng.below(3)).map(|_| sentence(&mut rng, theme)).collect();
                        blocks.push(Block::Paragraph(sentences.join(" ")));
                    }
                    ChapterSpec::new(
                        &format!("chapter{number}.xhtml"),
                        &format!("Chapter {number}: {}", capitalise(rng.pick(theme.nouns))),
                        blocks,
                    )
                })
                .collect();
            let author = format!("{} {}", rng.pick(PEOPLE), rng.pick(&["Ashdown", "Brightwater", "Crane", "Dunmore"]));
            let spec = BookSpec::new(&title, &author, "en", chapters);
            (format!("book-{:03}.epub", index + 1), build_epub(&spec))
        })
        .collect()
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
