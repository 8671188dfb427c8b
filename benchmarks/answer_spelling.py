"""Where a SentencePiece chat model puts an answer's mass: on "▁" before the digit, or on the digit.

A 2-layer d=64 transformers Llama with the test SentencePiece tokenizer (tests/real_tokenizers.py)
and the Mistral chat format is trained (Adam, N steps, CPU) to answer the 24 VSM items with planted
digits, each answer encoded as its own segment ("▁", digit, </s>) as Mistral's encoder writes it.
It then prints the next-token mass on "▁" and on the five digits right after [/INST], and on the
digits after "▁". This model was *made* to have Mistral's habit: the figures show that the two reads
differ and which one recovers the answers, not how any real checkpoint behaves.

    python benchmarks/answer_spelling.py 300
"""
import time, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import numpy as np, torch, transformers
from real_tokenizers import sentencepiece_tokenizer_folder
from jaxalign.prompting.chat_formats import CHAT_FORMATS
from jaxalign.prompting import item_messages
from jaxalign.survey import vsm13
torch.manual_seed(0); torch.set_num_threads(1)
tok = transformers.AutoTokenizer.from_pretrained(sentencepiece_tokenizer_folder())
tok.chat_template = CHAT_FORMATS["mistral"].template
enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
items = vsm13().items
planted = [q % 5 + 1 for q in range(len(items))]
prompts = [enc(tok.apply_chat_template(item_messages(it, marker=""), tokenize=False, add_generation_prompt=True)) for it in items]
rows = [p + enc(str(d)) + [tok.eos_token_id] for p, d in zip(prompts, planted)]  # answer as its own segment: "▁", d
print("prompt lens", min(map(len, prompts)), max(map(len, prompts)), tok.convert_ids_to_tokens(rows[0][-4:]))
T = max(map(len, rows)); ids = torch.full((len(rows), T), 0); mask = torch.zeros_like(ids)
for i, r in enumerate(rows): ids[i, :len(r)] = torch.tensor(r); mask[i, :len(r)] = 1
cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False)
model = transformers.LlamaForCausalLM(cfg)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
labels = ids.masked_fill(mask == 0, -100)
t0 = time.time()
for step in range(int(sys.argv[1])):
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0: print(step, float(loss), "%.1fs" % (time.time()-t0))
model.eval()
digits = tok.convert_tokens_to_ids(list("12345")); marker = tok.convert_tokens_to_ids("▁")
with torch.no_grad():
    at_end, at_marker = [], []
    for p, d in zip(prompts, planted):
        pe = torch.softmax(model(input_ids=torch.tensor([p])).logits[0, -1].double(), -1)
        pm = torch.softmax(model(input_ids=torch.tensor([p + [marker]])).logits[0, -1].double(), -1)
        at_end.append((float(pe[marker]), float(pe[digits].sum()), int(torch.argmax(pe[digits])) + 1))
        at_marker.append((float(pm[digits].sum()), int(torch.argmax(pm[digits])) + 1))
a = np.array(at_end); b = np.array(at_marker)
print("after [/INST]: P(▁) mean %.4f min %.4f; P(digits) mean %.4g max %.4g; argmax==planted %d/24" % (a[:,0].mean(), a[:,0].min(), a[:,1].mean(), a[:,1].max(), (a[:,2]==planted).sum()))
print("after ▁: P(digits) mean %.4f min %.4f; argmax==planted %d/24" % (b[:,0].mean(), b[:,0].min(), (b[:,1]==planted).sum()))
