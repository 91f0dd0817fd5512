fn main() { eprintln!("bench: scenarios arrive with the benchmark issue"); }
