"""Shell: throwaway local infrastructure (Tansu broker, Redis) on 127.0.0.1, for demo and tests."""
