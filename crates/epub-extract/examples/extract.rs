//! Prints the markdown of an EPUB file, or the reason it is refused: `cargo run -p epub-extract
//! --example extract -- book.epub`.

fn main() {
    for path in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(path);
        match epub_extract::extract_file(&path, &epub_extract::Limits::default()) {
            Ok(book) => {
                println!(
                    "title={:?} author={:?} language={:?} chapters={}",
                    book.title, book.author, book.language, book.chapters
                );
                println!("{}", book.markdown);
            }
            Err(error) => println!("{}: refused [{}] {error}", path.display(), error.code()),
        }
    }
}
