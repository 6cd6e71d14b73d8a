"""Users, passwords, tokens and the authentication hook."""
