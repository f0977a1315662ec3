"""Imported only by a warm server, before it forks a step of tests.throwaway_target (its
recipes name this module), so a step that finds it in sys.modules was forked warm."""
