fn main() {
    println!("shmwire CLI: coming with the bench issue");
}
