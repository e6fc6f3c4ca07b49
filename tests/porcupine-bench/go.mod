module detcd.invalid/porcupine-bench

go 1.18
