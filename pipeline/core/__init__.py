"""The ground every layer stands on: parameters, where outputs live, errors, atomic and sealed
files, hashing, shards, parallel work and devices. Imports nothing else of the library."""
