//! All system calls of veil, behind safe wrappers on `OwnedFd`.
