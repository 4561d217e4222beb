"""The shipped data (package data beside the loaders): MMLU-Pro routing tables, natural prompts,
domain topic phrases, short questions; and the loaders, with their fixed splits."""
