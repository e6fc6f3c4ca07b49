//! detcd simulator.
