fn main() -> anyhow::Result<()> {
    bangerd::main_entry()
}
